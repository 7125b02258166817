"""Does a video frame show a face? A fast answer for the video source, which keeps only frames with faces.

YuNet (OpenCV's `FaceDetectorYN`, a 230 kB ONNX model, Apache-2.0) answers in a few milliseconds per frame on
a laptop CPU, which matters when a broadcast hour is sampled at one frame per second. It only gates frames:
the `detect` stage still finds, aligns and scores every face with the project's own detector.
"""

from __future__ import annotations

import cv2
import numpy as np

from facedata import models

YUNET_FILE = "face_detection_yunet_2023mar.onnx"

if "yunet" not in models.REGISTRY:
    models.register(
        models.ModelSpec(
            name="yunet",
            kind="detector",
            folder="yunet",
            version="face_detection_yunet_2023mar",
            files=(
                models.ModelFile(
                    YUNET_FILE,
                    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
                    "https://media.githubusercontent.com/media/opencv/opencv_zoo/main/models/"
                    "face_detection_yunet/face_detection_yunet_2023mar.onnx",
                ),
            ),
            license="Apache-2.0 (ShiqiYu/libfacedetection.train); MIT in opencv_zoo",
            description="YuNet face detector for OpenCV FaceDetectorYN; gates video frames (faces or not)",
        )
    )


class FrameFaceFinder:
    """Counts faces in RGB frames: score >= `min_score`, shorter box side >= `min_face_px` (in frame pixels).

    Frames are shrunk so their longer side is at most `max_side` before detection (faces smaller than
    `min_face_px` are not wanted anyway, so this loses nothing that would be kept)."""

    def __init__(self, min_score: float = 0.7, min_face_px: float = 24, max_side: int = 640):
        self.min_score = float(min_score)
        self.min_face_px = float(min_face_px)
        self.max_side = int(max_side)
        path = models.locate_file("yunet", YUNET_FILE)
        self.version = models.get_spec("yunet").version
        # The detector's own threshold is kept lower than ours so the best score is known for the log row.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5 warns about DNN targets
        try:
            self._det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), min(0.5, self.min_score), 0.3, 50)
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._size: tuple[int, int] | None = None

    def faces(self, rgb: np.ndarray) -> tuple[int, float]:
        """(faces passing the thresholds, best score of any candidate)."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(
                bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._size:
            self._det.setInputSize(size)
            self._size = size
        _, found = self._det.detect(bgr)
        if found is None or len(found) == 0:
            return 0, 0.0
        found = np.asarray(found, dtype=np.float32)
        sides = np.minimum(found[:, 2], found[:, 3]) / scale
        scores = found[:, -1]
        keep = (scores >= self.min_score) & (sides >= self.min_face_px)
        return int(keep.sum()), float(scores.max())


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
