"""Folder source: a tree `<root>/<name>/<images>`; each sub-folder's name is the name queried for its images.

Every entry the walk meets ends as exactly one item, so every entry gets a `crawl_log` row: a regular file
is read (with a size cap) and judged by the ingest stage; anything else is reported here and never read:

- skipped: hidden entries (`.git`, `..folder`, `.DS_Store`), OS metadata files, files directly under the root
  (they have no name), sub-folders inside a name folder (only `<name>/<file>` is read), files past
  `max_per_name`;
- failed: links that leave the root (resolved first: `x.jpg -> /etc/passwd` is refused unread), broken links,
  link loops, special files (FIFOs, sockets, devices), entries that cannot be listed or opened.

Entries are visited in sorted order, so runs are deterministic. Links that stay inside the root are followed
(their content is an image like any other; the same bytes twice become a duplicate row).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facedata.collect.base import SourceItem

OS_METADATA = {"thumbs.db", "desktop.ini", "icon\r"}


@dataclass(frozen=True)
class FolderEntry:
    name: str | None  # the queried name (its folder), None for entries directly under the root
    path: Path  # the entry as listed (not resolved), under the root
    real: Path | None  # what it resolves to, when that is a readable regular file inside the root
    error: str | None = None  # "code: message" for an entry that is not read
    skipped: bool = False  # not read on purpose (hidden, capped...) rather than refused


def walk_folder_source(root: Path, names: list[str] | None, max_per_name: int | None) -> list[FolderEntry]:
    """Every entry of the source, sorted, with what to do with it; raises with a clear message for a bad root
    or a named folder that does not exist."""
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist (sources.folders in params.yaml)")
    real_root = Path(os.path.realpath(root))
    out: list[FolderEntry] = []
    if names:
        for name in sorted(names):
            if not os.path.lexists(root / name):
                raise FileNotFoundError(f"source folder {root} has no sub-folder {name!r} (sources.folders.names)")
        tops = sorted(names)
    else:
        try:
            tops = sorted(os.listdir(root))
        except OSError as exc:
            raise FileNotFoundError(f"source folder {root} cannot be listed: {exc.strerror}") from exc
    for top in tops:
        path = root / top
        if not names and top.startswith("."):
            out.append(_skip(None, path, "hidden", "hidden entries (names starting with '.') are not read"))
            continue
        real, kind, error = _resolve(path, real_root)
        if error:
            out.append(FolderEntry(top if names else None, path, None, error))
        elif kind != "dir":
            out.append(
                _skip(
                    None,
                    path,
                    "no_name",
                    f"a {kind} directly under the source root has no name: put it in <root>/<name>/",
                )
            )
        else:
            out.extend(_walk_name_folder(top, path, real_root, max_per_name))
    return out


def _walk_name_folder(name: str, folder: Path, real_root: Path, max_per_name: int | None) -> list[FolderEntry]:
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        return [FolderEntry(name, folder, None, f"unreadable: the folder cannot be listed ({exc.strerror})")]
    out, taken = [], 0
    for entry in entries:
        path = folder / entry
        if entry.startswith("."):
            out.append(_skip(name, path, "hidden", "hidden entries (names starting with '.') are not read"))
            continue
        if entry.lower() in OS_METADATA:
            out.append(_skip(name, path, "os_metadata", "an operating system's metadata file"))
            continue
        real, kind, error = _resolve(path, real_root)
        if error:
            out.append(FolderEntry(name, path, None, error))
        elif kind == "dir":
            out.append(_skip(name, path, "subfolder", "only <name>/<file> is read, not deeper folders"))
        elif max_per_name and taken >= max_per_name:
            out.append(_skip(name, path, "cap_per_name", f"more than max_per_name {max_per_name} files"))
        else:
            taken += 1
            out.append(FolderEntry(name, path, real))
    return out


def _skip(name: str | None, path: Path, code: str, message: str) -> FolderEntry:
    return FolderEntry(name, path, None, f"{code}: {message}", skipped=True)


def _resolve(path: Path, real_root: Path) -> tuple[Path | None, str, str | None]:
    """(resolved path, kind: file | dir | special, error) without opening anything outside the root."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "file", "symlink_loop: the link never reaches a file"
        if os.path.islink(path):
            return None, "file", "broken_link: the link points to nothing"
        return None, "file", f"unreadable: {exc.strerror or exc}"
    if real != real_root and real_root not in real.parents:
        return None, "file", f"outside_root: links to {real}, outside the source root; refused unread"
    try:
        st = os.stat(real)
    except OSError as exc:
        return None, "file", f"unreadable: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return real, "dir", None
    if stat.S_ISREG(st.st_mode):
        return real, "file", None
    return None, "special", f"special_file: a {_kind(st.st_mode)}, not a regular file; refused unread"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """Up to `max_bytes + 1` bytes of a regular file; refuses anything else without reading it (a FIFO swapped
    in after the walk would otherwise block the run)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file (a {_kind(st.st_mode)})")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def iter_folder_items(
    root: Path,
    root_label: str,
    names: list[str] | None,
    max_per_name: int | None,
    labeled: bool,
    query_names: dict[str, str] | None,
    max_bytes: int,
) -> Iterator[SourceItem]:
    """One item per entry; `source_uri` is `root_label` (the root as written in params.yaml) plus the path
    below it, so every clone of a project records the same source whatever its own location."""
    for entry in walk_folder_source(root, names, max_per_name):
        query = (query_names or {}).get(entry.name, entry.name) if entry.name is not None else None
        item = SourceItem(
            source_kind="folder",
            source_uri=f"{root_label.rstrip('/')}/{entry.path.relative_to(root).as_posix()}",
            query_name=query,
            fetched_at=dt.datetime.now(dt.UTC),
            label=entry.name if labeled else None,
            error=entry.error,
            skipped=entry.skipped,
        )
        if entry.real is not None:
            try:
                size = entry.real.stat().st_size
                if size > max_bytes:
                    item.error = f"too_large: {size} bytes > ingest.max_bytes {max_bytes}"
                else:
                    item.data = read_regular_file(entry.real, max_bytes)
            except OSError as exc:
                item.error = f"unreadable: {exc.strerror or exc}"
        yield item
