"""Video source: frames worth keeping from broadcast video, each a lossless PNG with its video id (sha256 of
the file), frame index and timestamp in the lineage.

Which frames are candidates: one every 1/`fps` seconds (the first frame included), plus the first frame of
every new shot: the video is analysed at `scene_fps` frames per second and a cut is a jump in the colour
histogram (Bhattacharyya distance of a 16x4x4 HSV histogram of a thumbnail above `scene_threshold`; on the
Hamilton clip real cuts score 0.45-0.58 and motion within a shot at most 0.25). At most `max_frames`
candidates per video.

Which candidates are kept: those with at least one face (YuNet, see `video_faces`) and not near-identical to
a frame already kept from the same video (perceptual hash within `dup_bits`). The others still get a
crawl_log row, status `skipped` with the reason (`no_face`, `near_identical`), so every candidate is
accounted for.

A rerun reuses the decisions of an earlier run with the same params for the same video bytes (frames are
still decoded, since cuts must be found again, but not re-detected or re-encoded), so a killed run resumes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from facedata import ids
from facedata.collect.base import SourceItem
from facedata.imageio import encode_png, hamming, phash
from facedata.params import default


@dataclass(frozen=True)
class VideoSettings:
    """How frames are sampled from a video (the `ingest.video_*` params)."""

    fps: float = default("ingest.video_fps")
    max_frames: int = default("ingest.max_frames_per_video")
    scene_threshold: float = default("ingest.video_scene_threshold")  # 0 turns scene-change sampling off
    scene_fps: float = default("ingest.video_scene_fps")
    faces_only: bool = default("ingest.video_faces_only")
    face_min_score: float = default("ingest.video_face_min_score")
    min_face_px: float = default("ingest.video_min_face_px")
    dup_bits: int = default("ingest.video_dup_bits")  # -1 keeps near-identical frames

    @classmethod
    def from_params(cls, p: dict, **overrides) -> VideoSettings:
        values = dict(
            fps=float(p["video_fps"]),
            max_frames=int(p["max_frames_per_video"]),
            scene_threshold=float(p["video_scene_threshold"]),
            scene_fps=float(p["video_scene_fps"]),
            faces_only=bool(p["video_faces_only"]),
            face_min_score=float(p["video_face_min_score"]),
            min_face_px=float(p["video_min_face_px"]),
            dup_bits=int(p["video_dup_bits"]),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def for_picks(cls, p: dict, n_frames: int) -> VideoSettings:
        """Settings for frames a person picked: all of them kept (no face gate, no near-duplicate drop, no
        cut sampling); the `ingest` params still apply to the image checks."""
        return cls.from_params(p, max_frames=n_frames, scene_threshold=0.0, faces_only=False, dup_bits=-1)


class Pick(NamedTuple):
    """A frame a reviewer picked: the face track it shows, and the region of the frame to store ([x, y, w, h]
    in frame pixels, None: the whole frame)."""

    track: str | None = None
    region: tuple[int, int, int, int] | None = None


NO_PICK = Pick()

#: A named person's frame is stored as the square of this many times their face box's longer side round it
#: (about the framing of an LFW photo), so the face named is the image's subject rather than a neighbour's.
PICK_MARGIN = 2.2


def face_region(box, width: int, height: int, margin: float = PICK_MARGIN) -> tuple[int, int, int, int]:
    """[x, y, w, h] of the square `margin` x the longer side of `box` (x1, y1, x2, y2) round its centre, cut
    to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    half = margin * max(x2 - x1, y2 - y1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a, b = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
    c, d = min(int(width), int(round(cx + half))), min(int(height), int(round(cy + half)))
    if c <= a or d <= b:
        raise ValueError(f"face box {list(box)} lies outside the {width}x{height} frame")
    return a, b, c - a, d - b


def crop(image: np.ndarray, region) -> np.ndarray:
    x, y, w, h = (int(v) for v in region)
    return image[y : y + h, x : x + w]


def frame_uri(path: str, idx: int, region=None) -> str:
    """A video frame's source URI: `path#frame=N`, and `&xywh=x,y,w,h` (a media-fragment region) when only
    that region of the frame is stored."""
    uri = f"{path}#frame={idx}"
    return uri if region is None else uri + "&xywh=" + ",".join(str(int(v)) for v in region)


def parse_frame_uri(uri: str) -> tuple[str, int, tuple[int, int, int, int] | None]:
    """(path, frame number, region or None) of a `frame_uri`."""
    path, _, frag = uri.partition("#frame=")
    idx, _, rest = frag.partition("&xywh=")
    region = tuple(int(v) for v in rest.split(",")) if rest else None
    return path, int(idx), region  # type: ignore[return-value]


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


def colour_signature(bgr: np.ndarray) -> np.ndarray:
    """A 16x4x4 HSV histogram of a 64x36 thumbnail, L1-normalised: cheap, and stable within a shot."""
    small = cv2.resize(bgr, (64, 36), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist(
        [cv2.cvtColor(small, cv2.COLOR_BGR2HSV)], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256]
    )
    cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
    return hist


def shot_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def iter_video_items(
    path: Path,
    label: str,
    settings: VideoSettings,
    query_name: str | None,
    previous=None,
    face_finder=None,
    source_name: str | None = None,
    stats: dict | None = None,
    picks: dict[int, Pick] | None = None,
) -> Iterator[SourceItem]:
    """Candidate frames of one video as SourceItems (kept frames with PNG bytes, the others `skipped`).

    `label` is the path as configured (params.yaml or the command line), recorded as the source, so clones
    of a project agree. `previous` (an `ingest.Previous`) lets frames an earlier run decided be reused;
    `face_finder` has a `faces(rgb)` method (a `LazyFaceFinder` when none is given); `stats` collects
    per-video counts. `picks` (frame number -> `Pick`) replaces the sampling: exactly those frames are
    candidates (a reviewer picked them; `VideoSettings.for_picks`), each with its track in the lineage and,
    when the pick has a region, stored as that region of the frame (`#frame=N&xywh=x,y,w,h`)."""
    uri = label
    now = dt.datetime.now(dt.UTC)
    stats = stats if stats is not None else {}
    base = {"source_name": source_name or uri}
    if not path.is_file():
        yield SourceItem("video", uri, query_name, now, error=f"missing: {path} does not exist", extra=base)
        return
    video_id = ids.sha256_file(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            yield SourceItem(
                "video", uri, query_name, now, error="unreadable: OpenCV cannot open this video", extra=base
            )
            return
        native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        pick_of = picks or {}

        def frame_item(idx: int, **kw) -> SourceItem:
            return _frame_item(uri, query_name, video_id, idx, native, base, pick_of.get(idx, NO_PICK), **kw)

        if picks is not None:
            regular = {i for i in picks if i < n}
            for idx in sorted(set(picks) - regular):
                yield frame_item(idx, error=f"missing: frame {idx} is past the end of the video ({n} frames)")
        else:
            regular = set(sample_indices(n, native, settings.fps, settings.max_frames))
        if not regular:
            yield SourceItem("video", uri, query_name, now, error=f"empty: {n} frames at {native} fps", extra=base)
            return
        scene_step = max(1, int(round(native / settings.scene_fps))) if settings.scene_threshold > 0 else 0
        if settings.faces_only and face_finder is None:
            from facedata.collect.video_faces import LazyFaceFinder

            face_finder = LazyFaceFinder(settings.face_min_score, settings.min_face_px)
        kept: list[tuple[int, str]] = []  # (frame index, phash) of frames kept so far
        last_sig = None
        n_candidates = 0
        idx = 0
        # Sequential grab() is exact and fast; seeking by frame index is not reliable across codecs.
        while idx < n:
            if not cap.grab():
                break
            is_regular = idx in regular
            analyse = scene_step and idx % scene_step == 0
            if not (is_regular or analyse):
                idx += 1
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                if is_regular:
                    n_candidates += 1
                    yield frame_item(idx, error=f"decode_failed: frame {idx}")
                idx += 1
                continue
            cut = None
            if analyse:
                sig = colour_signature(bgr)
                if last_sig is not None:
                    d = shot_distance(last_sig, sig)
                    if d > settings.scene_threshold:
                        cut = d
                last_sig = sig
            if (is_regular or cut is not None) and n_candidates < settings.max_frames:
                n_candidates += 1
                stats["scene_changes"] = stats.get("scene_changes", 0) + (cut is not None)
                yield _candidate(
                    bgr,
                    idx,
                    cut,
                    uri,
                    query_name,
                    video_id,
                    native,
                    base,
                    settings,
                    face_finder,
                    kept,
                    previous,
                    stats,
                    pick_of.get(idx, NO_PICK),
                )
            idx += 1
        stats["candidates"] = stats.get("candidates", 0) + n_candidates
        if n and idx < n and idx <= max(regular):
            yield frame_item(idx, error=f"truncated: video ended at frame {idx}, header says {n}")
    finally:
        cap.release()


def extract_frames(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The RGB frames at `indices`, decoded the way `iter_video_items` decodes them (sequential grab), so a
    kept frame's PNG comes out byte for byte again; frames the video no longer has are absent."""
    wanted = set(indices)
    out: dict[int, np.ndarray] = {}
    if not wanted or not Path(path).is_file():
        return out
    cap = cv2.VideoCapture(str(path))
    try:
        idx, last = 0, max(wanted)
        while idx <= last and cap.grab():
            if idx in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    out[idx] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            idx += 1
    finally:
        cap.release()
    return out


def _frame_item(uri, query_name, video_id, idx, native, base, pick: Pick = NO_PICK, **kw) -> SourceItem:
    extra = {
        **base,
        "video_id": video_id,
        "frame_index": idx,
        "timestamp_s": round(idx / native, 6) if native else None,
        "track_id": pick.track,
    }
    return SourceItem(
        "video", frame_uri(uri, idx, pick.region), query_name, dt.datetime.now(dt.UTC), extra=extra, **kw
    )


def _candidate(
    bgr, idx, cut, uri, query_name, video_id, native, base, settings, finder, kept, previous, stats, pick
):
    item = _frame_item(uri, query_name, video_id, idx, native, base, pick)
    if pick.region is not None:
        h, w = bgr.shape[:2]
        x, y, rw, rh = pick.region
        if x + rw > w or y + rh > h:
            item.error = f"bad_region: {list(pick.region)} lies outside the {w}x{h} frame"
            return item
        bgr = crop(bgr, pick.region)
    if cut is not None:
        item.extra["note"] = f"scene_change: colour histogram distance {cut:.2f}"
    shot = f" (first frame of a new shot: colour histogram distance {cut:.2f})" if cut is not None else ""
    reused = _reuse(previous, item, video_id)
    if reused is not None:
        status, frame_hash = reused
        if frame_hash is not None:
            kept.append((idx, frame_hash))
        item.reused = True
        stats[f"reused_{status}"] = stats.get(f"reused_{status}", 0) + 1
        return item
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if settings.faces_only:
        n_faces, best = finder.faces(rgb)
        if n_faces == 0:
            item.skipped = True
            item.error = f"no_face: no face with score >= {settings.face_min_score:g} (best {best:.2f}){shot}"
            stats["no_face"] = stats.get("no_face", 0) + 1
            return item
    frame_hash = phash(rgb)
    if settings.dup_bits >= 0:
        for other_idx, other in kept:
            d = hamming(frame_hash, other)
            if d <= settings.dup_bits:
                item.skipped = True
                item.error = f"near_identical: {d} bits from kept frame {other_idx}{shot}"
                stats["near_identical"] = stats.get("near_identical", 0) + 1
                return item
    kept.append((idx, frame_hash))
    item.data = encode_png(rgb)
    stats["kept"] = stats.get("kept", 0) + 1
    return item


def _reuse(previous, item: SourceItem, video_id: str) -> tuple[str, str | None] | None:
    """(status, phash of the kept frame or None) when an earlier run decided this frame of these bytes."""
    if previous is None:
        return None
    lid = ids.log_id("video", item.source_uri, item.query_name)
    prev = previous.get(lid)
    if prev is None or not previous.done(lid):
        return None
    log, image = prev
    if log.get("video_id") != video_id:
        return None
    if log["status"] in ("stored", "duplicate"):
        return log["status"], image["phash"] if image is not None else None
    return log["status"], None
