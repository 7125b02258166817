"""The content-addressed store: each blob lives at a path derived from its id, never from its source name.

`data/store/images/ab/<sha256>.jpg` holds an image whose sha256 is `ab...`; a second copy of the same bytes
maps to the same path and is stored once. Paths never come from URLs or file names, so a hostile name cannot
escape the store. Writes are atomic, so a killed run leaves either a complete blob or none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from facedata.atomic import write_bytes
from facedata.ids import sha256_bytes, sha256_file

STORE_DIR = Path("data") / "store"
_ID = re.compile(r"^[0-9a-zA-Z]{8,64}$")
_EXT = re.compile(r"^\.[a-z0-9]{1,5}$")


def blob_path(kind: str, blob_id: str, ext: str) -> Path:
    """Project-relative path of a blob; refuses ids or extensions that are not plain tokens."""
    if not _ID.match(blob_id):
        raise ValueError(f"not a store id: {blob_id!r}")
    if not _EXT.match(ext):
        raise ValueError(f"not a store extension: {ext!r}")
    if kind not in ("images", "crops"):
        raise ValueError(f"unknown store kind {kind!r}")
    return STORE_DIR / kind / blob_id[-2:] / f"{blob_id}{ext}"


def put_image(data: bytes, ext: str, root: str | os.PathLike = ".") -> tuple[str, Path, bool]:
    """Store image bytes under their sha256. Returns (image_id, relative path, newly_written). A file already
    at that path is kept only when it holds exactly these bytes (a damaged copy is replaced)."""
    image_id = sha256_bytes(data)
    rel = blob_path("images", image_id, ext)
    target = Path(root) / rel
    if target.is_file() and target.stat().st_size == len(data) and sha256_file(target) == image_id:
        return image_id, rel, False
    write_bytes(target, data)
    return image_id, rel, True


def put_blob(kind: str, blob_id: str, ext: str, data: bytes, root: str | os.PathLike = ".") -> Path:
    rel = blob_path(kind, blob_id, ext)
    write_bytes(Path(root) / rel, data)
    return rel
