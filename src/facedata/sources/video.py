"""Video source: frames sampled at a fixed rate, each stored as a lossless PNG with its video id (sha256 of the
file), frame index and timestamp in the lineage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import cv2

from facedata.ids import sha256_file
from facedata.imageio import encode_png
from facedata.sources.base import SourceItem


def sample_indices(n_frames: int, native_fps: float, fps: float, max_frames: int) -> list[int]:
    """Frame indices at `fps` samples per second (the first frame included), at most `max_frames`."""
    if n_frames <= 0 or native_fps <= 0:
        return []
    step = max(native_fps / fps, 1.0)
    out, k = [], 0
    while True:
        idx = int(round(k * step))
        if idx >= n_frames or len(out) >= max_frames:
            return out
        if not out or idx != out[-1]:
            out.append(idx)
        k += 1


def iter_video_items(
    path: Path, label: str, fps: float, max_frames: int, query_name: str | None
) -> Iterator[SourceItem]:
    """Sampled frames of one video; `label` is the path as written in params.yaml (recorded as the source)."""
    uri = label
    now = dt.datetime.now(dt.UTC)
    if not path.is_file():
        yield SourceItem("video", uri, query_name, now, error=f"missing: {path} does not exist")
        return
    video_id = sha256_file(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            yield SourceItem("video", uri, query_name, now, error="unreadable: OpenCV cannot open this video")
            return
        native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = sample_indices(n, native, fps, max_frames)
        if not wanted:
            yield SourceItem("video", uri, query_name, now, error=f"empty: {n} frames at {native} fps")
            return
        wanted_set, last = set(wanted), wanted[-1]
        idx = 0
        # Sequential grab() is exact and fast; seeking by frame index is not reliable across codecs.
        while idx <= last:
            if not cap.grab():
                break
            if idx in wanted_set:
                ok, bgr = cap.retrieve()
                item = SourceItem(
                    "video",
                    f"{uri}#frame={idx}",
                    query_name,
                    dt.datetime.now(dt.UTC),
                    extra={"video_id": video_id, "frame_index": idx, "timestamp_s": round(idx / native, 6)},
                )
                if ok and bgr is not None:
                    item.data = encode_png(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                else:
                    item.error = f"decode_failed: frame {idx} could not be decoded"
                yield item
            idx += 1
        if idx <= last:
            yield SourceItem(
                "video",
                f"{uri}#frame={idx}",
                query_name,
                dt.datetime.now(dt.UTC),
                error=f"truncated: video ended at frame {idx}, header says {n}",
                extra={"video_id": video_id, "frame_index": idx},
            )
    finally:
        cap.release()
