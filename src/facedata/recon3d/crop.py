"""Crops for the regressor: where each 120x120 network input comes from in the photo, and the way back.

A crop is a square in the photo given by its centre, its side and an in-plane angle: an (n, 4) float array of
`cx, cy, side, theta` (theta in radians, image frame, y down). The network was trained on upright square crops
that include forehead and chin, so crops are made by two rules:

- `from_boxes`: from a detector box, the centre shifted down and the side enlarged (factors in params,
  because each detector draws its boxes differently; 3DDFA_V2 uses 0.14 / 1.58 for its FaceBoxes boxes);
- `from_landmarks`: from 68 landmarks, 3DDFA_V2's rule (the square around the landmarks, side = the diagonal
  of that square), measured in a frame turned by `theta`, so a tilted head gets an upright crop.

Refining the crop from the previous pass's landmarks (and turning it so the face is upright) is what takes a
rough detector box to the crop the network was trained on. Each crop is one affine warp from the photo
(sub-pixel exact, zero padding outside the photo), sampled like `cv2.resize` did in training.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 120


def from_boxes(boxes: np.ndarray, shift: float = 0.14, scale: float = 1.58) -> np.ndarray:
    """(n, 4) detector boxes x1 y1 x2 y2 -> (n, 4) crops; side = `scale` x the mean of the box's width and
    height, centre moved down by `shift` x that mean."""
    b = np.atleast_2d(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4)
    old = (b[:, 2] - b[:, 0] + b[:, 3] - b[:, 1]) / 2
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2 + old * shift
    return np.stack([cx, cy, old * scale, np.zeros_like(cx)], axis=1)


def rotate(points: np.ndarray, centres: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Turn (n, k, 2+) points by theta (n,) about centres (n, 2), in the image plane (extra columns kept)."""
    p = np.array(points, dtype=np.float64, copy=True)
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y = p[..., 0] - centres[:, 0:1], p[..., 1] - centres[:, 1:2]
    p[..., 0] = c * x - s * y + centres[:, 0:1]
    p[..., 1] = s * x + c * y + centres[:, 1:2]
    return p


def from_landmarks(pts: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
    """(n, 68, 2+) landmarks -> (n, 4) crops by 3DDFA_V2's `parse_roi_box_from_landmark`, measured in the frame
    turned by `theta` (the crop's angle; 0 = axis-aligned, as in 3DDFA_V2)."""
    p = np.asarray(pts, dtype=np.float64)[:, :, :2]
    n = len(p)
    theta = np.zeros(n) if theta is None else np.asarray(theta, dtype=np.float64).reshape(n)
    ref = p.mean(axis=1)
    upright = rotate(p, ref, -theta)  # landmarks as seen in the crop's own (upright) frame
    lo, hi = upright.min(axis=1), upright.max(axis=1)
    centre = rotate(((lo + hi) / 2)[:, None], ref, theta)[:, 0]
    side = np.sqrt(2.0) * (hi - lo).max(axis=1)
    return np.stack([centre[:, 0], centre[:, 1], side, theta], axis=1)


def as_boxes(crops: np.ndarray) -> np.ndarray:
    """(n, 4) crops -> (n, 4) x1 y1 x2 y2 of the axis-aligned square before turning (for reports)."""
    c = np.atleast_2d(crops)
    h = c[:, 2] / 2
    return np.stack([c[:, 0] - h, c[:, 1] - h, c[:, 0] + h, c[:, 1] + h], axis=1)


def affine(crop: np.ndarray, flip: bool = False) -> np.ndarray:
    """The 2x3 map from photo pixels to crop pixels (pixel-centre convention, like cv2.resize), optionally
    mirrored left-right."""
    cx, cy, side, theta = (float(v) for v in crop)
    s = side / SIZE
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    corner = np.array([cx - side / 2, cy - side / 2])
    centre = np.array([cx, cy])
    # crop pixel u (centre at u + 0.5 crop px) -> unturned photo point corner + (u + 0.5) s - 0.5 -> turned
    a = rot * s
    b = centre + rot @ (corner - 0.5 - centre) + rot @ np.array([0.5 * s, 0.5 * s])
    ai = np.linalg.inv(a)
    m = np.concatenate([ai, (-ai @ b)[:, None]], axis=1)
    if flip:
        m[0] = -m[0]
        m[0, 2] += SIZE - 1
    return m


def warp(image_bgr: np.ndarray, crops: np.ndarray, flip: bool = False) -> np.ndarray:
    """(n, 4) crops of one image -> (n, 120, 120, 3) uint8 network inputs."""
    out = np.zeros((len(crops), SIZE, SIZE, 3), np.uint8)
    for i, c in enumerate(np.asarray(crops, dtype=np.float64)):
        out[i] = cv2.warpAffine(
            image_bgr,
            affine(c, flip),
            (SIZE, SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return out


def to_image(pts: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """(n, 3, 68) points in the network's crop frame (3DDFA's: 1-based, y up) -> (n, 68, 3) photo points: x
    right, y down, z towards the camera in the same pixel scale, smallest z at 0 (3DDFA_V2's
    `similar_transform`, then the crop's turn)."""
    c = np.atleast_2d(np.asarray(crops, dtype=np.float64))
    p = np.array(pts, dtype=np.float64, copy=True)
    s = c[:, 2] / SIZE
    x = (p[:, 0] - 1) * s[:, None] + (c[:, 0] - c[:, 2] / 2)[:, None]
    y = (SIZE - p[:, 1]) * s[:, None] + (c[:, 1] - c[:, 2] / 2)[:, None]
    z = (p[:, 2] - 1) * s[:, None]
    out = np.stack([x, y, z - z.min(axis=1, keepdims=True)], axis=2)
    return rotate(out, c[:, :2], c[:, 3])


def mirror_frame(pts: np.ndarray, flip_index: np.ndarray) -> np.ndarray:
    """(n, 3, 68) crop-frame points predicted on a mirrored crop -> the same points for the unmirrored crop."""
    p = np.array(pts, dtype=np.float64, copy=True)
    p[:, 0] = SIZE + 1 - p[:, 0]  # x-1 -> (SIZE-1) - (x-1)
    return p[:, :, flip_index]


def to_input(crops: np.ndarray) -> np.ndarray:
    """(n, 120, 120, 3) uint8 BGR -> (n, 3, 120, 120) float32 normalised as in training: (x - 127.5) / 128."""
    x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
    x -= 127.5
    x /= 128.0
    return x
