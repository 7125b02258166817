"""Gaze direction (yaw, pitch) per face: where the irises sit in the eyes, combined with the head pose.

Method (a geometric eyeball model, no learning)
------
1. MediaPipe FaceMesh (0.10.14, `refine_landmarks=True`: 478 points with the iris centres 468 / 473) runs on a
   square crop around the face found by the regressor.
2. Each eyeball is a sphere of radius `EYEBALL_RADIUS` eye widths. The true (unforeshortened) eye width comes
   from the regressor's 3D landmarks (corners 36-39 and 42-45). The eyeball centre's image position is the
   midpoint of the FaceMesh eye corners, moved by the neutral offsets (`NEUTRAL_X` towards the nose,
   `NEUTRAL_Y` down, along the eye's own axes) and by `DEPTH` eye widths along the head's forward direction
   (from the regressor's head rotation): this is where the head pose enters.
3. The iris lies on the sphere, in front: its image offset from the eyeball centre, over the radius, gives the
   x and y of the gaze direction in the camera frame; z follows. Both eyes are averaged, weighted by their
   apparent width (the far eye of a turned head is foreshortened, and dropped below half the near eye's width).
4. The direction is given as yaw (> 0: towards the image's left, the subject's right) and pitch (> 0: down),
   the same signs as head pose; (0, 0) is looking along the camera axis, i.e. into a distant camera.

Calibration: the radius is anatomical (12 mm eyeball radius / 30 mm eye opening); the neutral offsets and the
depth were fitted on LFW press photos, assuming that people in them mostly look into the camera.

Accuracy: unmeasured. No gaze ground truth is available here, so no error figure is claimed (docs/3d.md,
"Gaze", lists what can be measured: mirror consistency, a lower bound). Its error sources: iris and eye-corner
localisation by FaceMesh (a pixel of iris error is a larger angle on a smaller eye); the eyeball radius and
neutral offsets are population averages, not calibrated per person; the visual axis differs from the eye's
optical axis by a person-specific angle that is not modelled; head-pose errors of the regressor move the
eyeball centre; the camera is treated as distant (a face near the edge of a wide-angle photo looks at the lens
at an angle this ignores); eyelids, glasses and reflections hide or fake the iris. Eyes must be open and
visible (status `eyes_closed` / `eyes_not_found`); heads turned beyond `MAX_HEAD_YAW` are refused
(`head_turned`), and eyes under `MIN_EYE_PX` pixels wide too (`eyes_too_small`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe FaceMesh indices (the subject's right eye is on the image's left), with the matching iBUG-68
# corners of the regressor's 3D landmarks. `nasal` is the image direction of the nose from that eye.
RIGHT_EYE = {"iris": 468, "corners": (33, 133), "lids": (159, 145), "ibug": (36, 39), "nasal": 1.0}
LEFT_EYE = {"iris": 473, "corners": (362, 263), "lids": (386, 374), "ibug": (42, 45), "nasal": -1.0}

EYEBALL_RADIUS = 0.4  # eye widths (12 mm / 30 mm)
NEUTRAL_X = -0.03  # eyeball centre offset from the corner midpoint towards the nose, eye widths (LFW fit)
NEUTRAL_Y = -0.06  # ... downwards (LFW fit: the iris sits above the corner line)
DEPTH = -0.08  # ... along the head's forward direction (LFW fit)
MIN_OPENNESS = 0.12  # lid distance / eye width under which an eye counts as closed
MIN_EYE_PX = 12.0
MAX_HEAD_YAW = 70.0


@dataclass
class EyeMeasure:
    offset: np.ndarray  # (2,) iris offset from the eyeball centre, image x right / y down, in radii
    width: float  # apparent width, pixels
    openness: float


@dataclass
class Gaze:
    status: str  # ok | eyes_not_found | eyes_closed | eyes_too_small | head_turned
    yaw: float | None = None  # degrees
    pitch: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return {"status": self.status, "yaw": self.yaw, "pitch": self.pitch, "reason": self.reason}


def measure_eye(mesh: np.ndarray, lm68: np.ndarray, forward: np.ndarray, eye: dict) -> EyeMeasure:
    """One eye from (478, 2) FaceMesh points and (68, 3) regressor landmarks (photo pixels) and the head's
    forward direction (camera frame, y up)."""
    a, b = mesh[eye["corners"][0]], mesh[eye["corners"][1]]
    width = float(np.linalg.norm(b - a))
    ex = (b - a) / max(width, 1e-9)
    ey = np.array([-ex[1], ex[0]])  # perpendicular, pointing down in the image
    true_width = float(np.linalg.norm(lm68[eye["ibug"][0]] - lm68[eye["ibug"][1]]))
    centre = (a + b) / 2 + true_width * (eye["nasal"] * NEUTRAL_X * ex + NEUTRAL_Y * ey)
    centre = centre + true_width * DEPTH * np.array([forward[0], -forward[1]])
    offset = (mesh[eye["iris"]] - centre) / max(EYEBALL_RADIUS * true_width, 1e-9)
    openness = float(np.linalg.norm(mesh[eye["lids"][0]] - mesh[eye["lids"][1]])) / max(width, 1e-9)
    return EyeMeasure(offset, width, openness)


def direction_angles(d: np.ndarray) -> tuple[float, float]:
    """A direction in the camera frame (x right, y up, z towards the camera) -> (yaw, pitch) in degrees."""
    yaw = math.degrees(math.atan2(-d[0], d[2]))
    pitch = math.degrees(math.atan2(-d[1], math.hypot(d[0], d[2])))
    return yaw, pitch


def offset_direction(offset: np.ndarray) -> np.ndarray:
    """Iris offset in radii (image x right, y down) -> unit gaze direction (camera frame, y up)."""
    v = np.asarray(offset, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if n > 0.95:
        v = v * (0.95 / n)
    return np.array([v[0], -v[1], math.sqrt(1.0 - float(v @ v))])


def gaze_from_landmarks(mesh: np.ndarray, lm68: np.ndarray, head_rotation: np.ndarray, head_yaw: float) -> Gaze:
    """Gaze from (478, 2) FaceMesh landmarks, (68, 3) regressor landmarks and the head rotation (3DDFA frame,
    model -> camera)."""
    if abs(head_yaw) > MAX_HEAD_YAW:
        return Gaze("head_turned", reason=f"head yaw {head_yaw:.0f} beyond {MAX_HEAD_YAW:.0f} degrees")
    forward = np.asarray(head_rotation)[:, 2]
    eyes = [measure_eye(mesh, lm68, forward, e) for e in (RIGHT_EYE, LEFT_EYE)]
    widest = max(e.width for e in eyes)
    if widest < MIN_EYE_PX:
        return Gaze("eyes_too_small", reason=f"eyes {widest:.0f} px wide (< {MIN_EYE_PX:.0f})")
    usable = [e for e in eyes if e.width >= 0.5 * widest and e.openness >= MIN_OPENNESS]
    if not usable:
        return Gaze("eyes_closed", reason="no open, visible eye")
    offset = np.average([e.offset for e in usable], axis=0, weights=[e.width for e in usable])
    yaw, pitch = direction_angles(offset_direction(offset))
    return Gaze("ok", round(yaw, 2), round(pitch, 2))


class GazeEstimator:
    """FaceMesh with iris refinement, run on one face crop at a time."""

    def __init__(self):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
        )

    def close(self) -> None:
        self._mesh.close()

    def landmarks(self, image_rgb: np.ndarray, box: np.ndarray, size: int = 256) -> np.ndarray | None:
        """(478, 2) photo-pixel FaceMesh landmarks of the face in `box` (x1 y1 x2 y2), or None."""
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1) * 1.6
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        s = size / side
        m = np.array([[s, 0, size / 2 - cx * s], [0, s, size / 2 - cy * s]])
        crop = cv2.warpAffine(image_rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
        with warnings.catch_warnings():
            # mediapipe calls protobuf's deprecated GetPrototype on every image (a flood in build logs)
            warnings.filterwarnings("ignore", r"SymbolDatabase\.GetPrototype\(\) is deprecated", UserWarning)
            result = self._mesh.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * size, p.y * size) for p in lm], dtype=np.float64)
        return (pts - m[:, 2]) / s

    def estimate(
        self, image_rgb: np.ndarray, box: np.ndarray, lm68: np.ndarray, head_rotation: np.ndarray
    ) -> Gaze:
        """Gaze of the face in `box` given the regressor's landmarks and head rotation."""
        from facedata.recon3d.bfm import angles

        head_yaw = float(angles(np.asarray(head_rotation)[None])[0, 0])
        if abs(head_yaw) > MAX_HEAD_YAW:
            return Gaze("head_turned", reason=f"head yaw {head_yaw:.0f} beyond {MAX_HEAD_YAW:.0f} degrees")
        pts = self.landmarks(image_rgb, box)
        if pts is None or len(pts) < 478:
            return Gaze("eyes_not_found", reason="FaceMesh found no face with irises in the crop")
        return gaze_from_landmarks(pts, lm68, head_rotation, head_yaw)
