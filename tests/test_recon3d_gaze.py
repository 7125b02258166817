"""Gaze: the eyeball geometry on synthetic landmarks, and mirror consistency on real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _face(iris_shift=(0.0, 0.0), width=40.0):
    """FaceMesh-like (478, 2) and iBUG (68, 3) landmarks of a frontal face whose irises sit at the eyeball
    centres, moved by `iris_shift` (in eyeball radii, image x right / y down)."""
    from facedata.recon3d import gaze

    mesh = np.zeros((478, 2))
    lm68 = np.zeros((68, 3))
    for eye, cx in ((gaze.RIGHT_EYE, 200.0), (gaze.LEFT_EYE, 300.0)):
        a, b = np.array([cx - width / 2, 250.0]), np.array([cx + width / 2, 250.0])
        mesh[eye["corners"][0]], mesh[eye["corners"][1]] = a, b
        mesh[eye["lids"][0]], mesh[eye["lids"][1]] = [cx, 240.0], [cx, 260.0]
        lm68[eye["ibug"][0], :2], lm68[eye["ibug"][1], :2] = a, b
        centre = (a + b) / 2 + width * np.array([eye["nasal"] * gaze.NEUTRAL_X, gaze.NEUTRAL_Y])
        mesh[eye["iris"]] = centre + np.asarray(iris_shift) * gaze.EYEBALL_RADIUS * width
    return mesh, lm68


def _head(yaw_deg):
    y = math.radians(-yaw_deg)  # the 3DDFA rotation of a head turned by yaw (towards the image's left: > 0)
    return np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])


def test_iris_at_the_eyeball_centre_looks_along_the_camera_axis():
    from facedata.recon3d.gaze import gaze_from_landmarks

    g = gaze_from_landmarks(*_face(), np.eye(3), 0.0)
    assert g.status == "ok" and abs(g.yaw) < 1e-6 and abs(g.pitch) < 1e-6


@pytest.mark.parametrize("angle", [-30.0, -10.0, 15.0, 35.0])
def test_iris_offsets_give_yaw_and_pitch_with_the_head_pose_signs(angle):
    from facedata.recon3d.gaze import gaze_from_landmarks

    s = math.sin(math.radians(angle))
    g = gaze_from_landmarks(*_face((-s, 0.0)), np.eye(3), 0.0)  # iris towards the image's left: yaw > 0
    assert g.yaw == pytest.approx(angle, abs=0.01) and abs(g.pitch) < 0.01
    g = gaze_from_landmarks(*_face((0.0, s)), np.eye(3), 0.0)  # iris lower in the image: looking down
    assert g.pitch == pytest.approx(angle, abs=0.01) and abs(g.yaw) < 0.01


def test_head_pose_moves_the_eyeball_centre():
    from facedata.recon3d import gaze

    mesh, lm68 = _face()
    turned = gaze.gaze_from_landmarks(mesh, lm68, _head(30), 30.0)
    # the centre moves by DEPTH eye widths along the head's forward direction: the same iris now reads as
    # looking sideways by asin(-DEPTH * sin(30) / radius)
    expect = math.degrees(math.asin(-gaze.DEPTH * math.sin(math.radians(30)) / gaze.EYEBALL_RADIUS))
    assert turned.yaw == pytest.approx(expect, abs=0.05)


def test_statuses_for_unusable_eyes():
    from facedata.recon3d.gaze import gaze_from_landmarks

    mesh, lm68 = _face(width=8.0)
    assert gaze_from_landmarks(mesh, lm68, np.eye(3), 0.0).status == "eyes_too_small"
    mesh, lm68 = _face()
    mesh[[159, 145, 386, 374], 1] = 250.0  # lids closed
    assert gaze_from_landmarks(mesh, lm68, np.eye(3), 0.0).status == "eyes_closed"
    assert gaze_from_landmarks(*_face(), _head(80), 80.0).status == "head_turned"


@pytest.mark.shared
def test_mirrored_photos_give_mirrored_gaze():
    from .recon3d_helpers import AFLW, EXAMPLES, detector, read_rgb, reconstructor

    rec = reconstructor()
    checked = 0
    for path in (AFLW / "image00050.jpg", AFLW / "image03614.jpg", EXAMPLES / "JianzhuGuo.jpg"):
        rgb = read_rgb(path)
        flipped = np.ascontiguousarray(rgb[:, ::-1])
        a = rec.faces([rgb], [detector().detect([rgb])[0].boxes[:1]])[0][0].gaze
        b = rec.faces([flipped], [detector().detect([flipped])[0].boxes[:1]])[0][0].gaze
        assert a.status == b.status == "ok", (a, b)
        assert a.yaw == pytest.approx(-b.yaw, abs=6)
        assert a.pitch == pytest.approx(b.pitch, abs=6)
        checked += 1
    assert checked == 3


@pytest.mark.shared
def test_facemesh_runs_without_the_protobuf_deprecation_flood(shared):
    """mediapipe's FaceMesh raised protobuf's GetPrototype deprecation warning on every photo (32 of them in
    one demo build log); it is filtered where it is raised, and only there."""
    import warnings

    from facedata.recon3d.gaze import GazeEstimator

    from .recon3d_helpers import AFLW, detector, read_rgb

    rgb = read_rgb(AFLW / "image00050.jpg")
    box = detector().detect([rgb])[0].boxes[0]
    est = GazeEstimator()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert est.landmarks(rgb, box) is not None
        assert est.landmarks(rgb, box) is not None
        warnings.warn("SymbolDatabase.GetPrototype() is deprecated elsewhere", UserWarning, stacklevel=1)
    est.close()
    assert [str(w.message) for w in rec] == ["SymbolDatabase.GetPrototype() is deprecated elsewhere"]
