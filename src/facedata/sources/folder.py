"""Folder source: a tree `<root>/<name>/<images>`; each sub-folder's name is the name queried for its images.

Files are listed in sorted order (so runs are deterministic) and read with a size cap; anything that is not
an acceptable image is reported by the ingest stage, not skipped here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

from facedata.sources.base import SourceItem

IGNORED = {".ds_store", "thumbs.db", "desktop.ini"}


def list_folder_source(root: Path, names: list[str] | None, max_per_name: int | None) -> list[tuple[str, Path]]:
    """(folder name, file path) pairs to ingest, sorted; raises with a clear message for a bad root."""
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist (sources.folders in params.yaml)")
    wanted = sorted(names) if names else folder_names(root)
    out = []
    for name in wanted:
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"source folder {root} has no sub-folder {name!r} (sources.folders.names)")
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.lower() not in IGNORED
        )
        if max_per_name:
            files = files[:max_per_name]
        out.extend((name, f) for f in files)
    return out


def iter_folder_items(
    root: Path,
    root_label: str,
    names: list[str] | None,
    max_per_name: int | None,
    labeled: bool,
    query_names: dict[str, str] | None,
    max_bytes: int,
) -> Iterator[SourceItem]:
    """Items for every file; `source_uri` is `root_label` (the root as written in params.yaml) plus the path
    below it, so every clone of a project records the same source whatever its own location."""
    for name, path in list_folder_source(root, names, max_per_name):
        query = (query_names or {}).get(name, name)
        item = SourceItem(
            source_kind="folder",
            source_uri=f"{root_label.rstrip('/')}/{path.relative_to(root).as_posix()}",
            query_name=query,
            fetched_at=dt.datetime.now(dt.UTC),
            label=name if labeled else None,
        )
        try:
            size = path.stat().st_size
            if size > max_bytes:
                item.error = f"too_large: {size} bytes > ingest.max_bytes {max_bytes}"
            else:
                with open(path, "rb") as fh:
                    item.data = fh.read(max_bytes + 1)
        except OSError as exc:
            item.error = f"unreadable: {exc.strerror or exc}"
        yield item


def folder_names(root: Path) -> list[str]:
    """The queried names under `root`: its sub-folders, hidden ones (.git, .cache...) excluded."""
    return sorted(d for d in os.listdir(root) if not d.startswith(".") and (root / d).is_dir())
