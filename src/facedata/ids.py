"""Content-derived identifiers: the same input always gets the same id, so reruns are idempotent.

- image_id: sha256 of the stored image bytes (hex, 64 chars). It is the image's content hash.
- face_id: derived from the image id, the detector and the face box rounded to whole pixels, so the same
  detection on the same bytes gives the same id while a different box gives a new one.
- log_id: one crawl_log row per (source kind, source address, queried name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digest(*parts: str, length: int = 32) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:length]


def face_id(image_id: str, detector: str, box: Sequence[float]) -> str:
    rounded = ",".join(str(int(round(float(v)))) for v in box)
    return "f" + _digest(image_id, detector, rounded)


def log_id(source_kind: str, source_uri: str, query_name: str | None) -> str:
    return "l" + _digest(source_kind, source_uri, query_name or "")


def cluster_id(member_face_ids: Sequence[str]) -> str:
    """Named after its smallest member, so the id does not depend on the order clusters were found in."""
    return "c" + _digest(min(member_face_ids), length=16)
