"""Turning fetched bytes into stored images: the part of collection every source shares.

For each `SourceItem`: check and fully decode the bytes (`facedata.imageio`), store them under their sha256,
and emit one `crawl_log` row (stored, duplicate or failed with a reason) plus, for a new image, an `images`
row. Exact duplicates are stored once; near duplicates (perceptual hash within a few bits) are kept but point
at the first copy with `dup_of`. An item seen in an earlier run with the same processing params is reused
as it was, without decoding again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from facedata import ids, imageio, store
from facedata.manifest import SOURCE_COLUMNS
from facedata.sources.base import SourceItem

# Source details a fetcher may know (URL, HTTP and video fields), copied from the item into its image row.
_SOURCE_EXTRA = tuple(
    c for c in SOURCE_COLUMNS if c not in ("query_name", "label", "source_kind", "source_uri", "fetched_at")
)


@dataclass
class IngestResult:
    images: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.log:
            out[row["status"]] = out.get(row["status"], 0) + 1
        return out

    def failure_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.log:
            if row["status"] == "failed":
                code = (row["reason"] or "unknown").split(":")[0]
                out[code] = out.get(code, 0) + 1
        return dict(sorted(out.items()))


def ingest_items(
    items: Iterable[SourceItem],
    root,
    params: dict,
    lineage: Callable[[], dict],
    previous: dict[str, dict] | None = None,
    on_progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[IngestResult], None] | None = None,
    checkpoint_seconds: float = 30.0,
) -> IngestResult:
    """Process `items` in order. `previous` maps log_id -> (log row, image row or None) from earlier runs whose
    params hash matches; those items are reused untouched. `checkpoint` is called every `checkpoint_seconds`
    with the partial result so a killed run keeps its work."""
    previous = previous or {}
    result = IngestResult()
    seen: dict[str, dict] = {}  # image_id -> its images row in this run
    last_flush = time.monotonic()
    for item in items:
        lid = ids.log_id(item.source_kind, item.source_uri, item.query_name)
        prev = previous.get(lid)
        if prev is not None and _reusable(prev, item, seen):
            log_row, image_row = prev
            result.log.append(log_row)
            if image_row is not None and image_row["image_id"] not in seen:
                seen[image_row["image_id"]] = image_row
                result.images.append(image_row)
        else:
            _process(item, lid, root, params, lineage, seen, result)
        if on_progress:
            on_progress(1)
        if checkpoint and time.monotonic() - last_flush > checkpoint_seconds:
            checkpoint(result)
            last_flush = time.monotonic()
    mark_near_duplicates(result.images, params["near_dup_bits"])
    return result


def _reusable(prev: tuple[dict, dict | None], item: SourceItem, seen: dict[str, dict]) -> bool:
    log_row, image_row = prev
    if log_row["status"] == "stored":
        # The same bytes must still be there: a changed file at the same path is a new image.
        return (
            image_row is not None
            and item.data is not None
            and ids.sha256_bytes(item.data) == image_row["image_id"]
        )
    if log_row["status"] == "duplicate":
        return (
            item.data is not None
            and ids.sha256_bytes(item.data) == log_row["image_id"]
            and log_row["image_id"] in seen
        )
    return False


def _process(item: SourceItem, lid: str, root, params: dict, lineage, seen: dict, result: IngestResult) -> None:
    extra = item.extra
    log = {
        "log_id": lid,
        "query_name": item.query_name,
        "source_kind": item.source_kind,
        "source_uri": item.source_uri,
        "page_url": extra.get("page_url"),
        "final_url": extra.get("final_url"),
        "status": "failed",
        "reason": None,
        "image_id": None,
        "http_status": extra.get("http_status"),
        "content_type": extra.get("content_type"),
        "n_bytes": len(item.data) if item.data is not None else None,
        "attempts": item.attempts,
        "fetched_at": item.fetched_at,
        "lineage": lineage(),
    }
    result.log.append(log)
    if item.data is None:
        log["reason"] = item.error or "no_data: the source returned nothing"
        return
    image_id = ids.sha256_bytes(item.data)
    if image_id in seen:
        log.update(status="duplicate", reason=f"same bytes as {seen[image_id]['source_uri']}", image_id=image_id)
        return
    try:
        decoded = imageio.decode_image(item.data, max_pixels=params["max_pixels"], min_side=params["min_side"])
    except imageio.ImageRejected as exc:
        log["reason"] = f"{exc.code}: {exc.message}"
        return
    _, rel, _ = store.put_image(item.data, imageio.EXTENSIONS[decoded.format], root)
    row = {
        "image_id": image_id,
        "store_path": rel.as_posix(),
        "format": decoded.format,
        "width": decoded.width,
        "height": decoded.height,
        "n_bytes": len(item.data),
        "mode": decoded.mode,
        "n_frames": decoded.n_frames,
        "phash": imageio.phash(decoded.rgb),
        "dup_of": None,
        "query_name": item.query_name,
        "label": item.label,
        "source_kind": item.source_kind,
        "source_uri": item.source_uri,
        "fetched_at": item.fetched_at,
        "lineage": log["lineage"],
    }
    for key in _SOURCE_EXTRA:
        row[key] = extra.get(key)
    seen[image_id] = row
    result.images.append(row)
    log.update(status="stored", reason=None, image_id=image_id)


def mark_near_duplicates(images: list[dict], max_bits: int) -> None:
    """Set `dup_of` on each image whose phash is within `max_bits` of an earlier image in the list.

    Multi-index hashing: split the 64-bit hash into max_bits+1 chunks; two hashes within max_bits differ in at
    most max_bits chunks, so they agree exactly on at least one (pigeonhole). Only hashes sharing a chunk are
    compared, which keeps this near-linear on large collections.
    """
    for row in images:
        row["dup_of"] = None
    if max_bits <= 0 or len(images) < 2:
        return
    hashes = [int(r["phash"], 16) if r.get("phash") else None for r in images]
    n_chunks = max_bits + 1
    bounds = np.linspace(0, 64, n_chunks + 1).astype(int)
    tables: list[dict[int, list[int]]] = [{} for _ in range(n_chunks)]
    for i, h in enumerate(hashes):
        if h is None:
            continue
        best = None
        keys = [(h >> int(bounds[c])) & ((1 << int(bounds[c + 1] - bounds[c])) - 1) for c in range(n_chunks)]
        for c, key in enumerate(keys):
            for j in tables[c].get(key, ()):
                if (h ^ hashes[j]).bit_count() <= max_bits and (best is None or j < best):
                    best = j
        if best is not None:
            # Point at the first copy, not at a copy of a copy.
            images[i]["dup_of"] = images[best]["dup_of"] or images[best]["image_id"]
        for c, key in enumerate(keys):
            tables[c].setdefault(key, []).append(i)
