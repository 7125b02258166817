"""Does a video frame show a face? A fast answer for the video source, which keeps only frames with faces.

YuNet (OpenCV's `FaceDetectorYN`, a 230 kB ONNX model, Apache-2.0; `facedata.faces.detect.YuNetDetector`)
answers in a few milliseconds per frame on a laptop CPU, which matters when a broadcast hour is sampled at one
frame per second. It only gates frames: the `detect` stage still finds, aligns and scores every face with the
project's own detector.
"""

from __future__ import annotations

import numpy as np


class FrameFaceFinder:
    """Counts faces in RGB frames: score >= `min_score`, shorter box side >= `min_face_px` (in frame pixels).

    Frames are shrunk so their longer side is at most `max_side` before detection (faces smaller than
    `min_face_px` are not wanted anyway, so this loses nothing that would be kept)."""

    def __init__(self, min_score: float = 0.7, min_face_px: float = 24, max_side: int = 640):
        from facedata.faces.detect import YuNetDetector

        self.min_score = float(min_score)
        self.min_face_px = float(min_face_px)
        # The detector's floor is kept lower than ours so the best score is known for the log row.
        self._det = YuNetDetector(candidate_score=min(0.5, self.min_score), max_side=int(max_side))
        self.version = self._det.version

    def faces(self, rgb: np.ndarray) -> tuple[int, float]:
        """(faces passing the thresholds, best score of any candidate)."""
        found = self._det.detect([rgb])[0]
        if len(found) == 0:
            return 0, 0.0
        sides = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
        keep = (found.scores >= self.min_score) & (sides >= self.min_face_px)
        return int(keep.sum()), float(found.scores.max())


class LazyFaceFinder:
    """A FrameFaceFinder made on the first frame that needs it, so a run whose videos are all unreadable, or
    whose frames were all decided in an earlier run, never needs the model."""

    def __init__(self, min_score: float = 0.7, min_face_px: float = 24, max_side: int = 640):
        self.args = (min_score, min_face_px, max_side)
        self._finder: FrameFaceFinder | None = None

    def faces(self, rgb: np.ndarray) -> tuple[int, float]:
        if self._finder is None:
            self._finder = FrameFaceFinder(*self.args)
        return self._finder.faces(rgb)
