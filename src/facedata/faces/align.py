"""5-point alignment: a similarity transform (rotation, uniform scale, translation) from a face's landmarks to
a recognizer's canonical template.

Landmark order everywhere in facedata: left eye, right eye, nose tip, left mouth corner, right mouth corner
(as seen in the image), x then y. The 2x3 matrix maps source-image coordinates to crop coordinates and is
stored with each face, so any crop pixel can be mapped back to the photo (`invert`).
"""

from __future__ import annotations

import cv2
import numpy as np

# Where MTCNN's five points fall in dlib's own 150x150 face chip (dlib.get_face_chip, padding 0.25): measured
# by running MTCNN inside dlib-aligned chips of 398 LFW faces and averaging (per-point std 2-6 px), then made
# left-right symmetric about the chip centre. Aligning to it reproduces the geometry the dlib ResNet was
# trained on, so its published accuracy carries over (see BENCHMARKS.md, verification).
DLIB_150 = np.array([[46.8, 45.1], [102.2, 45.1], [74.5, 77.6], [50.6, 105.5], [98.4, 105.5]], dtype=np.float64)

# The ArcFace / InsightFace 112x112 template, for recognizers trained on that alignment.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# Where MTCNN's five points fall, on average, in facenet-pytorch's own crops (the MTCNN box resized to 160x160,
# margin 0), measured on 200 LFW faces and made symmetric: the geometry FaceNet (VGGFace2) was trained on.
FACENET_160 = np.array(
    [[43.7, 61.5], [116.3, 61.5], [80.0, 92.8], [47.8, 120.7], [112.2, 120.7]], dtype=np.float64
)

TEMPLATES: dict[str, tuple[np.ndarray, int]] = {
    "dlib150": (DLIB_150, 150),
    "arcface112": (ARCFACE_112, 112),
    "facenet160": (FACENET_160, 160),
}


# Detectors do not put their five points in the same places (RetinaFace's eye points sit further apart
# than MTCNN's on the same face), so a template measured with one detector's points mis-scales another's
# faces. dlib's chip geometry is therefore measured per detector, the same way as DLIB_150: each detector run
# inside dlib's own 150 px chips of 400 LFW faces, averaged, made symmetric
# (`python -m benchmarks faces -- --measure-templates` reproduces it; what it is worth: BENCHMARKS.md).
DETECTOR_TEMPLATES: dict[tuple[str, str], np.ndarray] = {
    ("dlib150", "retinaface"): np.array(
        [[45.2, 43.9], [104.8, 43.9], [75.0, 76.5], [49.0, 104.3], [101.0, 104.3]], dtype=np.float64
    ),
    ("dlib150", "yunet"): np.array(
        [[48.0, 44.2], [102.0, 44.2], [75.0, 77.1], [51.7, 103.0], [98.3, 103.0]], dtype=np.float64
    ),
}


def template(name: str, size: int, detector: str | None = None) -> np.ndarray:
    """The template's points scaled to a `size` x `size` crop, in `detector`'s landmark convention when it
    has its own measurement (see DETECTOR_TEMPLATES)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown alignment template {name!r}; known: {', '.join(TEMPLATES)}")
    pts, native = TEMPLATES[name]
    pts = DETECTOR_TEMPLATES.get((name, detector or ""), pts)
    return pts * (size / native)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) taking `src` points onto `dst`; returns a 2x3 matrix.

    Closed form and deterministic (no RANSAC), so the same landmarks always give the same crop.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def warp(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The aligned crop. Border pixels are replicated so a face near the frame edge still gets a full crop."""
    return cv2.warpAffine(
        rgb, matrix.astype(np.float64), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def align(
    rgb: np.ndarray, landmarks: np.ndarray, template_name: str, size: int, detector: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(crop, 2x3 matrix) for one face whose landmarks came from `detector`."""
    m = similarity_transform(landmarks, template(template_name, size, detector))
    return warp(rgb, m, size), m


def invert(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 matrix mapping crop coordinates back to the source image."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64).reshape(2, 3))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return pts @ m[:, :2].T + m[:, 2]
