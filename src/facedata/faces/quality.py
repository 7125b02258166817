"""Per-face quality signals and the filter that turns them into a status with a reason.

Nothing is dropped silently: a face that fails a threshold keeps its row with status `filtered` and the
reason(s), so users can see what was left out and why, and change the thresholds in params.yaml.

Signals: detector score, face size (shorter side of the box, px), cut-off (share of the box outside the
image), blur (variance of the Laplacian of the aligned crop), head pose (yaw, pitch, roll from the five
landmarks, `facedata.faces.pose`), and `combined_quality`, one number in [0, 1] for ranking faces.
"""

from __future__ import annotations

import math

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


def outside_fraction(box: np.ndarray, width: int, height: int) -> float:
    """Share of the box's area that lies outside the image: a face cut by the frame edge has part of it
    missing, and its crop is padded with replicated border pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    if area <= 0:
        return 1.0
    ix = max(0.0, min(x2, width) - max(x1, 0.0))
    iy = max(0.0, min(y2, height) - max(y1, 0.0))
    return float(1.0 - ix * iy / area)


def primary_index(
    boxes: np.ndarray, width: int, height: int, scores: np.ndarray | None = None, min_score: float = 0.0
) -> int:
    """The photo's subject: the face with the best mix of size and closeness to the centre.

    Score = area / (1 + (distance of box centre to image centre / half the image diagonal)^2 * 4). On news
    photos the subject is large and central; a big face at the edge still beats a tiny one in the middle.
    With `scores`, only detections scoring >= `min_score` compete when there are any: a weak candidate is
    often no face at all (on web photos, a torso or a dress below the real face is a big central box), and
    the subject must not be one of those.
    """
    if len(boxes) == 0:
        return -1
    b = np.asarray(boxes, dtype=np.float64)
    if scores is not None and np.any(np.asarray(scores) >= min_score):
        sure = np.flatnonzero(np.asarray(scores) >= min_score)
        return int(sure[primary_index(b[sure], width, height)])
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half_diag = 0.5 * np.hypot(width, height)
    dist = np.hypot(cx - width / 2, cy - height / 2) / half_diag
    return int(np.argmax(area / (1.0 + 4.0 * dist**2)))


def filter_reasons(
    score: float, size_px: float, outside: float, blur: float, yaw: float, pitch: float, params: dict
) -> list[str]:
    """Every threshold of params.yaml `detect` this face fails, as readable reasons (empty: usable).

    Each reason starts with a one-word key (score, size, cut_off, blur, yaw, pitch) that the stage counts."""
    reasons = []
    if score < params["min_score"]:
        reasons.append(f"score {score:.3f} < {params['min_score']}")
    if size_px < params["min_face_px"]:
        reasons.append(f"size {size_px:.0f}px < {params['min_face_px']}px")
    if outside > params["max_outside"]:
        reasons.append(f"cut_off {outside:.0%} of the box outside the image > {params['max_outside']:.0%}")
    if blur < params["min_blur"]:
        reasons.append(f"blur {blur:.2f} < {params['min_blur']}")
    if not math.isnan(yaw) and abs(yaw) > params["max_abs_yaw"]:
        reasons.append(f"yaw {yaw:.0f} deg, |yaw| > {params['max_abs_yaw']}")
    if not math.isnan(pitch) and abs(pitch) > params["max_abs_pitch"]:
        reasons.append(f"pitch {pitch:.0f} deg, |pitch| > {params['max_abs_pitch']}")
    return reasons


def combined_quality(score: float, size_px: float, blur: float, yaw: float = 0.0, outside: float = 0.0) -> float:
    """One [0, 1] number for ranking faces: detector confidence x size x sharpness x frontality x completeness.

    Size saturates at 112 px (the input of most recognizers), sharpness at a Laplacian variance of 200; each
    of the two only halves the score at worst, since a small or soft face is still the right person. A profile
    (|yaw| 90) halves it too; a face half outside the image loses half."""
    size_term = min(1.0, size_px / 112.0)
    blur_term = min(1.0, blur / 200.0)
    yaw_term = 1.0 if math.isnan(yaw) else max(0.0, math.cos(math.radians(min(abs(yaw), 90.0))))
    q = (
        float(np.clip(score, 0, 1))
        * (0.5 + 0.5 * size_term)
        * (0.5 + 0.5 * blur_term)
        * (0.5 + 0.5 * yaw_term)
        * (1.0 - min(max(outside, 0.0), 1.0))
    )
    return float(np.clip(q, 0.0, 1.0))
