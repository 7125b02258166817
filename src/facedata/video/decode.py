"""Frames of a video at an analysis rate, each with the shot it belongs to.

Decoding is sequential (`grab` every frame, `retrieve` only those analysed): exact across codecs, unlike
seeking. Cuts are found the way the video source finds them (`facedata.collect.video`: a jump in a colour
histogram between frames analysed at `scene_fps`), so ingest and indexing agree on where shots start.

Decoding runs ahead of the analysis in a thread (`prefetch`): OpenCV releases the GIL while it decodes, so on
two cores the next frames decode while the models look at the current ones; the frames and their order are
the same as reading them in line. (`facedata.video.index` runs detection ahead of embedding the same way.)

A damaged file is not all-or-nothing: frames decode until the damage, and `VideoInfo.problem` says where it
stopped and why; only a file that cannot be opened at all, or yields no frame, is a `VideoError`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facedata import ids
from facedata.collect.video import colour_signature, sample_indices, shot_distance
from facedata.params import default


class VideoError(RuntimeError):
    """The file is missing, not a video OpenCV can open, or holds no decodable frame."""


@dataclass
class Frame:
    index: int  # frame number in the file (0-based)
    t: float  # seconds
    shot: int  # 0-based shot number
    rgb: np.ndarray


@dataclass
class VideoInfo:
    path: str
    video_id: str  # sha256 of the file
    native_fps: float
    header_frames: int  # what the container claims
    width: int
    height: int
    frames_decoded: int = 0  # frames actually read (grabbed) before the end or the damage
    problem: str | None = None  # truncated / decode errors: what happened and where
    cuts: list[float] = field(default_factory=list)  # seconds at which a new shot starts

    @property
    def seconds(self) -> float:
        """Duration of what could be decoded."""
        return self.frames_decoded / self.native_fps if self.native_fps else 0.0


def probe(path: str | Path) -> VideoInfo:
    """Open the file and read its header; `VideoError` with the reason when that fails."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(
                f"{path}: not a video OpenCV can open (corrupt, truncated before its index, or "
                "an unsupported codec)"
            )
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        cap.release()
    if fps <= 0 or not np.isfinite(fps):
        raise VideoError(f"{path}: the container gives no frame rate ({fps}); cannot place frames in time")
    return VideoInfo(str(path), ids.sha256_file(path), fps, n, w, h)


def iter_frames(
    info: VideoInfo,
    fps: float,
    scene_threshold: float,
    scene_fps: float,
    max_seconds: float = default("video.max_seconds"),
) -> Iterator[Frame]:
    """The frames at `fps` per second (the first included), with their shot number. Fills `info.cuts`,
    `info.frames_decoded` and `info.problem` as it goes. `max_seconds` > 0 stops there."""
    native = info.native_fps
    # A container without a frame count is read to its end (bounded at a day).
    n = info.header_frames if info.header_frames > 0 else int(24 * 3600 * native)
    if max_seconds > 0:
        n = min(n, int(np.ceil(max_seconds * native)))
    wanted = set(sample_indices(n, native, fps, n))
    scene_step = max(1, int(round(native / scene_fps))) if scene_threshold > 0 else 0
    cap = cv2.VideoCapture(info.path)
    shot, last_sig, idx, bad = 0, None, 0, 0
    try:
        while idx < n:
            if not cap.grab():
                break
            info.frames_decoded = idx + 1
            sampled = idx in wanted
            analyse = bool(scene_step) and idx % scene_step == 0
            if not (sampled or analyse):
                idx += 1
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                bad += 1
                idx += 1
                continue
            if scene_step and (analyse or sampled):
                sig = colour_signature(bgr)
                if last_sig is not None and shot_distance(last_sig, sig) > scene_threshold:
                    shot += 1
                    info.cuts.append(round(idx / native, 6))
                last_sig = sig
            if sampled:
                yield Frame(idx, idx / native, shot, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            idx += 1
    finally:
        cap.release()
    problems = []
    if info.header_frames > 0 and info.frames_decoded < min(n, info.header_frames) - 1:
        problems.append(
            f"truncated: decoding stopped at frame {info.frames_decoded} of {info.header_frames} "
            f"({info.seconds:.2f} s of {info.header_frames / native:.2f} s); frames before it were indexed"
        )
    if bad:
        problems.append(f"decode_failed: {bad} frame(s) could not be decoded and were skipped")
    if info.frames_decoded == 0:
        raise VideoError(f"{info.path}: no frame could be decoded")
    info.problem = "; ".join(problems) or None


_DONE = object()


def prefetch(items: Iterable, depth: int, name: str = "facedata-decode") -> Iterator:
    """`items`, produced by a background thread (`name`) up to `depth` ahead. An exception in the producer is
    raised here, in order; stopping early (break, an exception in the consumer) stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            put((_DONE, e))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            x, error = q.get()
            if x is _DONE:
                if error is not None:
                    raise error
                return
            yield x
    finally:
        stop.set()
        thread.join()
