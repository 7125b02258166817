"""Head pose (yaw, pitch, roll in degrees) from the five landmarks every detector gives.

Five points fix a pose when we assume where they sit on an average head: we solve the perspective-n-point
problem (OpenCV `solvePnP`) between a rigid 3D model of the five points and the detected 2D points, with a
pinhole camera whose focal length is the image's longer side. The model is built from average adult
anthropometry (interpupillary distance ~63 mm, mouth width ~50 mm, eyes ~35 mm above and ~30 mm behind the
nose tip, mouth corners ~30 mm below and ~25 mm behind it), so it is a coarse estimate (its error against
AFLW2000-3D's ground truth, per detector, is in BENCHMARKS.md; YuNet's points barely move with pitch). It
tells a frontal face from a half-profile or a profile; it is not a substitute for a dense 3D fit (facedata's
3D module).

Conventions: degrees, with the signs of AFLW2000-3D's `Pose_Para` so numbers compare with that benchmark
(yaw > 0 when the nose points towards the image's left, pitch > 0 when the chin is raised).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# x right, y down, z away from the camera; millimetres; origin at the nose tip. Order: the eye at the image's
# left (the subject's right eye), the other eye, nose tip, mouth corner at the image's left, the other one.
MODEL_5 = np.array(
    [
        [-31.5, -35.0, 30.0],
        [31.5, -35.0, 30.0],
        [0.0, 0.0, 0.0],
        [-25.0, 30.0, 25.0],
        [25.0, 30.0, 25.0],
    ],
    dtype=np.float64,
)


def head_pose(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees for one face's (5, 2) landmarks in an image of the given size.

    Five nearly coplanar points allow mirror solutions, and near profile the iterative solver can land in a
    wrong one (a head upside down and turned). So the fit starts from three guesses (frontal, turned either
    way) and keeps the plausible solution (|pitch|, |roll| < 90) that reprojects best."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    f = float(max(width, height))
    cam = np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float64)
    # Start at the distance that explains the eye distance, centred on the nose.
    eye_px = max(float(np.linalg.norm(pts[1] - pts[0])), 1.0)
    z0 = f * 63.0 / eye_px
    centre = pts[2]
    tvec0 = np.array([[(centre[0] - width / 2) * z0 / f], [(centre[1] - height / 2) * z0 / f], [z0]])
    best, best_err, fallback, fallback_err = None, np.inf, None, np.inf
    for yaw0 in (0.0, 50.0, -50.0):
        rvec0 = np.array([[0.0], [math.radians(yaw0)], [0.0]])
        ok, rvec, tvec = cv2.solvePnP(
            MODEL_5, pts, cam, None, rvec0, tvec0.copy(), useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
        )
        if not ok:
            continue
        proj, _ = cv2.projectPoints(MODEL_5, rvec, tvec, cam, None)
        err = float(np.abs(proj.reshape(5, 2) - pts).mean())
        angles = euler_from_matrix(cv2.Rodrigues(rvec)[0])
        if err < fallback_err:
            fallback, fallback_err = angles, err
        if abs(angles[1]) < 90 and abs(angles[2]) < 90 and err < best_err:
            best, best_err = angles, err
    if best is not None:
        return best
    if fallback is not None:
        return fallback
    return float("nan"), float("nan"), float("nan")


def euler_from_matrix(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a model-to-camera rotation, R = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    yaw = math.asin(max(-1.0, min(1.0, -rot[2, 0])))
    pitch = math.atan2(rot[2, 1], rot[2, 2])
    roll = math.atan2(rot[1, 0], rot[0, 0])
    # Signs chosen to agree with AFLW2000-3D's Pose_Para on its ground-truth landmarks (tests check them).
    return math.degrees(yaw), -math.degrees(pitch), math.degrees(roll)
