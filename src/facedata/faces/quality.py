"""Per-face quality signals and the filter that turns them into a status with a reason.

Nothing is dropped silently: a face that fails a threshold keeps its row with status `filtered` and the
reason(s), so users can see what was left out and why, and change the thresholds in params.yaml.
"""

from __future__ import annotations

import cv2
import numpy as np


def blur_score(crop_rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low means blurry. Measured on the aligned crop so the value
    does not depend on the size of the face in the photo."""
    gray = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def box_size(box: np.ndarray) -> float:
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(0.0, min(x2 - x1, y2 - y1))


def primary_index(boxes: np.ndarray, width: int, height: int) -> int:
    """The photo's subject: the face with the best mix of size and closeness to the centre.

    Score = area / (1 + (distance of box centre to image centre / half the image diagonal)^2 * 4). On news
    photos the subject is large and central; a big face at the edge still beats a tiny one in the middle.
    """
    if len(boxes) == 0:
        return -1
    b = np.asarray(boxes, dtype=np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half_diag = 0.5 * np.hypot(width, height)
    dist = np.hypot(cx - width / 2, cy - height / 2) / half_diag
    return int(np.argmax(area / (1.0 + 4.0 * dist**2)))


def filter_reasons(score: float, size_px: float, blur: float, params: dict) -> list[str]:
    reasons = []
    if score < params["min_score"]:
        reasons.append(f"score {score:.3f} < {params['min_score']}")
    if size_px < params["min_face_px"]:
        reasons.append(f"size {size_px:.0f}px < {params['min_face_px']}px")
    if blur < params["min_blur"]:
        reasons.append(f"blur {blur:.1f} < {params['min_blur']}")
    return reasons


def combined_quality(score: float, size_px: float, blur: float) -> float:
    """A single [0, 1] number for ordering faces: detector confidence x size saturation x sharpness saturation."""
    size_term = min(1.0, size_px / 112.0)
    blur_term = min(1.0, blur / 200.0)
    return float(np.clip(score, 0, 1) * (0.5 + 0.5 * size_term) * (0.5 + 0.5 * blur_term))
