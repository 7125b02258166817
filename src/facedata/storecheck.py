"""The store check: every stored file a stage relies on is what its manifest says it is, or the stage says so.

A stored image's name is its sha256 (`image_id`), an aligned crop's sha256 is in its `faces` row
(`crop_sha256`). `Verifier.check` hashes a file and compares; a file whose size, mtime and inode are those it
had when it last hashed right is trusted without reading it again (a small SQLite cache in `data/`), so a
rerun over a million unchanged files costs a million `stat`s, not a million reads.

`restore_images` is the ingest stage's pass over its images: a missing or damaged stored image is copied
again from its source when the source still has the same bytes (a folder file, a video frame decoded again,
or, when `ingest.restore_from_web` allows, the URL fetched again); otherwise its row leaves `images` and
every crawl_log row that pointed at it becomes `failed` with reason `lost: ...`, so no later stage relies on
a file that is not there and the loss is on record. Crops are recomputed by the detect stage instead (see
`facedata.pipeline.detect`): they are derived from the stored images.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from facedata import ids, store
from facedata.imageio import EXTENSIONS, sniff_format

CACHE_FILE = Path("data") / ".store_check.sqlite"
OK, MISSING, DAMAGED = "ok", "missing", "damaged"


class Verifier:
    """Checks stored files against their expected sha256, remembering files that checked out by size, mtime
    and inode. Use as a context manager (the cache is saved on exit)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.n_hashed = 0
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> Verifier:
        path = self.root / CACHE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError:  # a damaged cache is only a cache: start a new one
            path.unlink(missing_ok=True)
            self._db = self._open(path)
        return self

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TABLE IF NOT EXISTS verified (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
            "ino INTEGER, sha256 TEXT)"
        )
        return db

    def __exit__(self, *exc) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.commit()
            self._db.close()
            self._db = None

    def check(self, rel: str, expected: str | None) -> tuple[str, str | None]:
        """(ok | missing | damaged, the file's sha256 or None when missing). With `expected` None, any
        readable file is ok and its hash is returned (rows written before hashes were recorded)."""
        path = self.root / rel
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return MISSING, None
        except OSError:
            return DAMAGED, None
        if not stat.S_ISREG(st.st_mode):
            return DAMAGED, None
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._db is not None:
            row = self._db.execute(
                "SELECT size, mtime_ns, ino, sha256 FROM verified WHERE path = ?", (rel,)
            ).fetchone()
            if row is not None and tuple(row[:3]) == key and (expected is None or row[3] == expected):
                return OK, row[3]
        try:
            actual = ids.sha256_file(path)
        except OSError:
            return DAMAGED, None
        self.n_hashed += 1
        if expected is not None and actual != expected:
            self.forget(rel)
            return DAMAGED, actual
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)", (rel, *key, actual))
        return OK, actual

    def forget(self, rel: str) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM verified WHERE path = ?", (rel,))


@dataclass
class StoreReport:
    """What a store check found: per image id, how it ended (restored from where, or lost and why)."""

    restored: dict[str, str] = field(default_factory=dict)  # image_id -> the source it came back from
    lost: dict[str, str] = field(default_factory=dict)  # image_id -> why it could not come back

    def metrics(self, limit: int = 5) -> dict:
        return {
            "n_restored": len(self.restored),
            "n_lost": len(self.lost),
            "lost": dict(sorted(self.lost.items())[:limit]),
        }

    def summary(self) -> str | None:
        if not self.restored and not self.lost:
            return None
        n = len(self.restored) + len(self.lost)
        text = f"{n} stored image(s) were missing or damaged: {len(self.restored)} restored from their source"
        if self.lost:
            text += (
                f", {len(self.lost)} lost (crawl_log rows now say `lost`; the source no longer has them), e.g. "
                + "; ".join(f"{k[:12]}: {v}" for k, v in list(self.lost.items())[:3])
            )
        return text


def bad_crops(faces: list[dict], verifier: Verifier) -> dict[str, str]:
    """Face id -> missing | damaged for each face whose stored crop is not what its row recorded. A row written
    before crop hashes were recorded gets the hash of the file it has (filled in place)."""
    out = {}
    for face in faces:
        if not face.get("crop_path"):
            continue
        status, actual = verifier.check(face["crop_path"], face.get("crop_sha256"))
        if status != OK:
            out[face["face_id"]] = status
        elif face.get("crop_sha256") is None:
            face["crop_sha256"] = actual
    return out


#: fetch(url rows) -> {image_id: bytes}: how lost web images are fetched again (None: not allowed).
Refetch = Callable[[list[dict]], dict[str, bytes]]


def restore_images(
    root: str | os.PathLike,
    images: list[dict],
    log: list[dict],
    resolve: Callable[[str], Path],
    refetch: Refetch | None = None,
    verifier: Verifier | None = None,
    no_refetch: str = "ingest.restore_from_web is false",
) -> tuple[list[dict], list[dict], StoreReport]:
    """Check every image row's stored file; restore what its sources still have; mark the rest lost.
    `resolve` turns a recorded source path into a path on this machine; `refetch` fetches web images again
    (None: not allowed, for the reason `no_refetch`). Returns new (images, log, report)."""
    root = Path(root)
    report = StoreReport()
    with contextlib.ExitStack() as stack:
        verifier = verifier or stack.enter_context(Verifier(root))
        bad: dict[str, str] = {}
        for row in images:
            status, _ = verifier.check(row["store_path"], row["image_id"])
            if status != OK:
                bad[row["image_id"]] = status
        if not bad:
            return images, log, report
        by_id = {r["image_id"]: r for r in images}
        sources = _sources_of(bad, images, log)
        _restore_local(root, by_id, sources, resolve, report)
        left = [i for i in bad if i not in report.restored]
        web = [s for i in left for s in sources[i] if s["source_kind"] in ("url", "web_api", "web_page")]
        if web and refetch is not None:
            fetched = refetch(web)
            for image_id in left:
                if image_id in fetched:
                    _put(root, by_id[image_id], fetched[image_id])
                    report.restored[image_id] = by_id[image_id]["source_uri"]
        for image_id in bad:
            if image_id in report.restored:
                verifier.forget(by_id[image_id]["store_path"])
            else:
                report.lost[image_id] = _why_lost(
                    bad[image_id], sources[image_id], None if refetch else no_refetch
                )
    if not report.lost:
        return images, log, report
    kept = [r for r in images if r["image_id"] not in report.lost]
    new_log = []
    for row in log:
        if row["image_id"] in report.lost and row["status"] in ("stored", "duplicate"):
            row = {**row, "status": "failed", "reason": f"lost: {report.lost[row['image_id']]}"}
        new_log.append(row)
    return kept, new_log, report


def _sources_of(bad: dict[str, str], images: list[dict], log: list[dict]) -> dict[str, list[dict]]:
    """Every place each bad image's bytes came from: its own source, then each duplicate's."""
    out: dict[str, list[dict]] = {i: [] for i in bad}
    for row in images:
        if row["image_id"] in out:
            out[row["image_id"]].append(row)
    for row in log:
        known = out.get(row["image_id"]) if row["status"] in ("stored", "duplicate") else None
        if known is not None and all(s["source_uri"] != row["source_uri"] for s in known):
            known.append(row)
    return out


def _restore_local(root: Path, by_id: dict, sources: dict, resolve, report: StoreReport) -> None:
    from facedata.collect.video import parse_frame_uri

    frames: dict[str, dict[int, list[tuple[str, tuple | None]]]] = {}  # video -> frame -> (image id, region)
    for image_id, rows in sources.items():
        for src in rows:
            if src["source_kind"] == "folder":
                data = _read_source_file(resolve(src["source_uri"]))
                if data is not None and ids.sha256_bytes(data) == image_id:
                    _put(root, by_id[image_id], data)
                    report.restored[image_id] = src["source_uri"]
                    break
            elif src["source_kind"] == "video" and src.get("frame_index") is not None:
                path, idx, region = parse_frame_uri(src["source_uri"])
                frames.setdefault(path, {}).setdefault(idx, []).append((image_id, region))
    for path, wanted in frames.items():
        from facedata.collect.video import crop, extract_frames, frame_uri
        from facedata.imageio import encode_png

        todo = {idx: [(i, r) for i, r in want if i not in report.restored] for idx, want in wanted.items()}
        todo = {idx: want for idx, want in todo.items() if want}
        if not todo:
            continue
        for idx, rgb in extract_frames(resolve(path), sorted(todo)).items():
            for image_id, region in todo[idx]:
                if image_id in report.restored:
                    continue
                data = encode_png(rgb if region is None else crop(rgb, region))
                if ids.sha256_bytes(data) == image_id:
                    _put(root, by_id[image_id], data)
                    report.restored[image_id] = frame_uri(path, idx, region)


def _read_source_file(path: Path) -> bytes | None:
    from facedata.collect.folder import read_regular_file

    try:
        return read_regular_file(path, 1 << 40)
    except OSError:
        return None


def _put(root: Path, row: dict, data: bytes) -> None:
    ext = Path(row["store_path"]).suffix or EXTENSIONS.get(sniff_format(data) or "", "")
    rel = store.blob_path("images", row["image_id"], ext)
    if rel.as_posix() != row["store_path"]:
        raise ValueError(f"unexpected store path {row['store_path']} for image {row['image_id']}")
    store.put_image(data, ext, root)


def _why_lost(status: str, sources: Iterable[dict], no_refetch: str | None) -> str:
    kinds = sorted({s["source_kind"] for s in sources})
    web = any(k in ("url", "web_api", "web_page") for k in kinds)
    what = "file missing from the store" if status == MISSING else "stored file damaged (sha256 differs)"
    if web and no_refetch:
        return f"{what}; not fetched again ({no_refetch})"
    return f"{what}; no source ({', '.join(kinds) or 'none recorded'}) still has the same bytes"
