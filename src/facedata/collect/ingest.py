"""Turning fetched bytes into stored images: the part of collection every source shares.

For each `SourceItem`: check and fully decode the bytes (`facedata.imageio`), store them under their sha256,
and emit one `crawl_log` row (stored, duplicate or failed with a reason) plus, for a new image, an `images`
row. Exact duplicates are stored once; near duplicates (perceptual hash within a few bits) are kept but point
at the first copy with `dup_of`. An item seen in an earlier run with the same processing params is reused
as it was, without decoding again; items a source did not fetch again because an earlier run finished them
(`SourceItem.reused`, see `Previous.done`) take their earlier rows.

The same rules serve the `ingest` stage and the `facedata ingest-urls` / `ingest-video` commands; the project
lock (`facedata.lock`) keeps two of them from writing a project's manifests at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata import ids, imageio, store
from facedata.collect.base import SourceItem
from facedata.lineage import Recipe
from facedata.manifest import RIGHTS_COLUMNS, SOURCE_COLUMNS
from facedata.params import default

# Source details a fetcher may know (URL, HTTP and video fields), copied from the item into its image row.
_SOURCE_EXTRA = tuple(
    c for c in SOURCE_COLUMNS if c not in ("query_name", "label", "source_kind", "source_uri", "fetched_at")
)

_LOG_EXTRA = ("video_id", "frame_index", "timestamp_s", "source_name")

#: Reason codes of failures (or skips) that a later run should try again: the network, the server's mood,
#: a cap or a policy that may change. Any other failure (404, not an image, too large...) is final: a rerun
#: reuses its row and does not fetch the URL again.
RETRY_NEXT_RUN = frozenset(
    {
        "timeout",
        "connection",
        "incomplete",
        "dns",
        "tls",
        "internal",
        "request_error",
        "robots",
        "robots_unavailable",
        "cap_per_name",
        "cap_per_run",
        "blocked_address",
        "unreadable",
        "page_failed",
        "api_error",
        "no_results",
        "lost",
        "restricted",
    }
)


def reason_code(reason: str | None) -> str:
    return (reason or "unknown").split(":", 1)[0].strip()


def is_retryable(code: str) -> bool:
    return code in RETRY_NEXT_RUN or code in ("http_408", "http_425", "http_429") or code.startswith("http_5")


@dataclass
class Previous:
    """Rows of earlier runs made with the same processing params, by log_id: `(log row, image row or None)`.
    For a `duplicate` row the image row is the stored copy it duplicates."""

    rows: dict[str, tuple[dict, dict | None]] = field(default_factory=dict)
    root: Path | None = None

    def get(self, lid: str) -> tuple[dict, dict | None] | None:
        return self.rows.get(lid)

    def __contains__(self, lid: str) -> bool:
        return lid in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def items(self):
        return self.rows.items()

    def done(self, lid: str) -> bool:
        """Whether the item needs no new fetch: stored or duplicate with its image still in the store, or a
        failure that a retry would not change."""
        prev = self.rows.get(lid)
        if prev is None:
            return False
        log, image = prev
        if log["status"] in ("stored", "duplicate"):
            if image is None:
                return False
            return self.root is None or (self.root / image["store_path"]).is_file()
        return not is_retryable(reason_code(log["reason"]))

    @classmethod
    def from_tables(
        cls, log_rows: list[dict], image_rows: list[dict], recipe: Recipe | None, root: Path | None = None
    ) -> Previous:
        """Rows `recipe` would make as they are (same params and code; every row when None)."""
        images = {r["image_id"]: r for r in image_rows}
        out: dict[str, tuple[dict, dict | None]] = {}
        for row in log_rows:
            if recipe is not None and not recipe.made(row["lineage"]):
                continue
            image = images.get(row["image_id"]) if row["status"] in ("stored", "duplicate") else None
            if row["status"] in ("stored", "duplicate") and image is None:
                continue
            out[row["log_id"]] = (row, image)
        return cls(out, Path(root) if root is not None else None)


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
    previous: Previous | dict | None = None,
    on_progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[IngestResult], None] | None = None,
    checkpoint_seconds: float = default("crawl.checkpoint_seconds"),
    known: dict[str, dict] | None = None,
    on_item: Callable[[SourceItem, dict], None] | None = None,
) -> IngestResult:
    """Process `items` in order. `previous` maps log_id -> (log row, image row or None) from earlier runs whose
    params hash matches; those items are reused (a stored image's row takes the rights its source states now,
    see `_current_rights`). `known` holds image rows already in the project
    (not part of this result) that new items are exact duplicates of. `checkpoint` is called every
    `checkpoint_seconds` with the partial result, and once more when the run is interrupted, so a killed run
    keeps its work. `on_item(item, log_row)` sees each item's final log row (for reports)."""
    if isinstance(previous, dict) or previous is None:
        previous = Previous(dict(previous or {}))
    result = IngestResult()
    seen: dict[str, dict] = {}  # image_id -> its images row in this run
    known = known or {}
    done_ids: set[str] = set()
    last_flush = time.monotonic()
    try:
        for item in items:
            lid = ids.log_id(item.source_kind, item.source_uri, item.query_name)
            if lid in done_ids:
                continue  # the same item listed twice: one row
            done_ids.add(lid)
            prev = previous.get(lid)
            if prev is not None and _reusable(prev, item, seen):
                log_row, image_row = prev
                result.log.append(log_row)
                if log_row["status"] == "stored":
                    image_row = _current_rights(image_row, item)
                if image_row is not None and image_row["image_id"] not in seen:
                    seen[image_row["image_id"]] = image_row
                    result.images.append(image_row)
            elif item.reused:
                # The source skipped the fetch on the strength of a row that is no longer usable: say so.
                _process(_unfetched(item), lid, root, params, lineage, seen, known, result)
            else:
                _process(item, lid, root, params, lineage, seen, known, result)
            if on_item:
                on_item(item, result.log[-1])
            if on_progress:
                on_progress(1)
            if checkpoint and time.monotonic() - last_flush > checkpoint_seconds:
                checkpoint(result)
                last_flush = time.monotonic()
    except BaseException:
        if checkpoint:
            checkpoint(result)
        raise
    mark_near_duplicates(result.images, params["near_dup_bits"], earlier=list(known.values()))
    return result


def _current_rights(image_row: dict | None, item: SourceItem) -> dict | None:
    """A reused image row with the rights its source states today (a license corrected, a personality-rights
    tag added since the last run), when the source states any; the bytes and lineage stay as they were."""
    if image_row is None or not any(k in item.extra for k in RIGHTS_COLUMNS):
        return image_row
    now = {k: item.extra.get(k) for k in RIGHTS_COLUMNS}
    if all(image_row.get(k) == v for k, v in now.items()):
        return image_row
    return {**image_row, **now}


def _unfetched(item: SourceItem) -> SourceItem:
    item.error = "internal: the source reused an earlier row that is gone; rerun to fetch it again"
    return item


def _reusable(prev: tuple[dict, dict | None], item: SourceItem, seen: dict[str, dict]) -> bool:
    log_row, image_row = prev
    if item.reused:
        return log_row["status"] not in ("stored", "duplicate") or image_row is not None
    if log_row["status"] == "stored":
        # The same bytes must still be there: a changed file at the same path is a new image.
        return (
            image_row is not None
            and item.data is not None
            and ids.sha256_bytes(item.data) == image_row["image_id"]
        )
    if log_row["status"] == "duplicate":
        return (
            image_row is not None and item.data is not None and ids.sha256_bytes(item.data) == log_row["image_id"]
        )
    if log_row["status"] == "skipped":
        # A skipped video frame (no face, near-identical): the same frame gets the same decision.
        return item.skipped and item.data is None and reason_code(item.error) == reason_code(log_row["reason"])
    return False


def _process(
    item: SourceItem, lid: str, root, params: dict, lineage, seen: dict, known: dict, result: IngestResult
) -> None:
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
    for key in _LOG_EXTRA:
        log[key] = extra.get(key)
    result.log.append(log)
    if item.data is None:
        log["reason"] = item.error or "no_data: the source returned nothing"
        if item.skipped:
            log["status"] = "skipped"
        return
    image_id = ids.sha256_bytes(item.data)
    first = seen.get(image_id)
    if first is None and image_id in known:
        # An image already in the project is a duplicate's first copy, unless it came from this very item
        # (a URL fetched again after its earlier row could not be reused): then it is stored again.
        k = known[image_id]
        if (k["source_kind"], k["source_uri"]) != (item.source_kind, item.source_uri):
            first = k
    if first is not None:
        log.update(status="duplicate", reason=f"same bytes as {first['source_uri']}", image_id=image_id)
        return
    try:
        decoded = imageio.decode_image(item.data, max_pixels=params["max_pixels"], min_side=params["min_side"])
    except imageio.ImageRejected as exc:
        log["reason"] = f"{exc.code}: {exc.message}"
        return
    try:
        _, rel, _ = store.put_image(item.data, imageio.EXTENSIONS[decoded.format], root)
    except BaseException:
        # Not stored (a full disk, an interrupt): the item is unfinished, not failed; no row, so a rerun does it.
        result.log.pop()
        raise
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
    # A stored image keeps a note when something about it deserves one (a mislabelled content type).
    log.update(status="stored", reason=extra.get("note"), image_id=image_id)


def mark_near_duplicates(images: list[dict], max_bits: int, earlier: list[dict] | None = None) -> None:
    """Set `dup_of` on each image whose phash is within `max_bits` of an earlier image in the list (or in
    `earlier`, rows already in the project whose own `dup_of` is left as it is).

    Multi-index hashing: split the 64-bit hash into max_bits+1 chunks; two hashes within max_bits differ in at
    most max_bits chunks, so they agree exactly on at least one (pigeonhole). Only hashes sharing a chunk are
    compared, which keeps this near-linear on large collections.
    """
    for row in images:
        row["dup_of"] = None
    current = {r["image_id"] for r in images}
    earlier = [r for r in (earlier or []) if r["image_id"] not in current]
    if max_bits <= 0 or len(images) + len(earlier) < 2:
        return
    n_earlier = len(earlier)
    everything = earlier + images
    hashes = [int(r["phash"], 16) if r.get("phash") else None for r in everything]
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
        if best is not None and i >= n_earlier:
            # Point at the first copy, not at a copy of a copy.
            everything[i]["dup_of"] = everything[best]["dup_of"] or everything[best]["image_id"]
        for c, key in enumerate(keys):
            tables[c].setdefault(key, []).append(i)
