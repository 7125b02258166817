"""Dense Surrey Face Model fitting (single and multi-view) and its small solvers."""

from __future__ import annotations

import numpy as np
import pytest

from .recon3d_helpers import MULTIVIEW, boxes_of, read_rgb, reconstructor

pytestmark = pytest.mark.shared


def _rot(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return ry @ rx


def _synthetic_landmarks(sfm, alpha, beta, cam):
    """68 photo landmarks of a model instance: fixed mapping, jaw points on the model contour."""
    from facedata.recon3d.dense import LEFT_JAW, RIGHT_JAW

    v = sfm.shape(alpha, beta)
    pts = np.zeros((68, 2))
    for i, vid in sfm.fixed.items():
        pts[i] = cam.project(v[[vid]])[0, :2]
    for jaw, contour in ((RIGHT_JAW, sfm.right_contour), (LEFT_JAW, sfm.left_contour)):
        picks = np.linspace(0, len(contour) - 1, len(jaw)).round().astype(int)
        pts[list(jaw)] = cam.project(v[contour[picks]])[:, :2]
    for i in (60, 64):  # not defined on the SFM: any value, they are not used
        pts[i] = pts[i - 12]
    return pts


def test_estimate_camera_recovers_a_scaled_orthographic_camera():
    from facedata.recon3d.dense import Camera, estimate_camera, load_sfm

    sfm = load_sfm()
    cam = Camera(1.7, _rot(25, -10), np.array([320.0, 240.0]))
    pts = sfm.mean[::17]
    est = estimate_camera(pts, cam.project(pts)[:, :2])
    assert est.scale == pytest.approx(1.7, rel=1e-6)
    assert np.allclose(est.rotation, cam.rotation, atol=1e-6)
    assert np.allclose(est.t, cam.t, atol=1e-4)
    assert est.pose()[0] == pytest.approx(-25, abs=1e-3)  # model turned to the image's right: yaw < 0


def test_fit_recovers_a_synthetic_face():
    from facedata.recon3d.dense import Camera, fit, load_sfm

    sfm = load_sfm()
    rng = np.random.default_rng(3)
    alpha = rng.normal(0, 0.8, sfm.basis.shape[2])
    beta = np.array([0, 0.3, 0, 0.5, 0, 0])
    cam = Camera(2.0, _rot(-20, 5), np.array([400.0, 300.0]))
    pts = _synthetic_landmarks(sfm, alpha, beta, cam)
    result = fit(sfm, [pts], iterations=8, lambda_shape=0.05)
    view = result.views[0]
    # sparse landmarks leave shape and pose partly ambiguous (alternating fits, as eos's, settle within a few
    # degrees); with the true shape given, camera and expression come back exactly
    assert view.error < 1.0  # % of the face size
    assert np.abs(view.camera.pose() - cam.pose()).max() < 6
    exact = fit(sfm, [pts], iterations=8, shape=alpha).views[0]
    assert exact.error < 0.05 and np.abs(exact.camera.pose() - cam.pose()).max() < 0.1
    assert np.allclose(exact.expression, beta, atol=0.02)
    # the shape comes back where landmarks constrain it: mesh vertices in the photo within 2% of the face
    truth = cam.project(sfm.shape(alpha, beta))[:, :2]
    got = view.camera.project(result.vertices(0))[:, :2]
    size = np.sqrt(np.prod(np.ptp(truth, axis=0)))
    assert np.median(np.linalg.norm(truth - got, axis=1)) / size < 0.03


def test_nonnegative_solver_matches_scipy():
    from scipy.optimize import lsq_linear

    from facedata.recon3d.dense import _solve_nonneg

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(size=(40, 12))
        b = rng.normal(size=40)
        ata, atb = a.T @ a + 0.1 * np.eye(12), a.T @ b
        x = _solve_nonneg(ata, atb, np.arange(6, 12))
        aug = np.vstack([a, np.sqrt(0.1) * np.eye(12)])
        ref = lsq_linear(aug, np.concatenate([b, np.zeros(12)]), bounds=([-np.inf] * 6 + [0] * 6, np.inf)).x
        assert np.allclose(x, ref, atol=1e-6)


def _views(folder):
    from facedata.recon3d.reconstruct import View

    rec = reconstructor()
    views = []
    for path in sorted((MULTIVIEW / folder).glob("*.jpg")):
        rgb = read_rgb(path)
        r = rec.faces([rgb], [boxes_of(str(path))[:1]])[0][0]
        assert r.dense is not None, r.reason
        views.append(View.from_result(rgb, r, path.name))
    return rec, views


@pytest.mark.parametrize("folder", ["hrn_celebahq_same_person", "emma_watson_3ddfa"])
def test_fusion_is_judged_on_views_the_fit_did_not_see(folder):
    """Leave one view out: the other views fused vs their single-view fits, all judged on the left-out view
    (the old check judged the fused fit on views it had seen against fits that had not). What is true on
    these two sets: fusion wins on the CelebA-HQ man's three views; on Emma Watson's (yaw 33-57 degrees) it
    wins on at least two of three. Larger sets: BENCHMARKS.md, "Multi-view fusion"."""
    rec, views = _views(folder)
    fused = rec.fuse(views)
    assert len(fused.view_errors) == len(fused.heldout_errors) == len(fused.single_heldout_errors) == 3
    lms = [v.landmarks for v in views]
    held = rec.explain(rec.fit_views([lms[1], lms[2]]).shape, lms[0])
    single = np.mean([rec.explain(views[j].shape, lms[0]) for j in (1, 2)])
    assert fused.heldout_errors[0] == pytest.approx(held) and fused.single_heldout_errors[0] == pytest.approx(
        single
    )
    # on average a fit judged on views it saw looks better than on views it did not: why the old check, which
    # judged the fused fit on views it had seen, flattered fusion
    assert np.mean(fused.view_errors) < np.mean(fused.heldout_errors)
    wins = [f < s for f, s in zip(fused.heldout_errors, fused.single_heldout_errors, strict=True)]
    assert sum(wins) >= (3 if folder == "hrn_celebahq_same_person" else 2), (
        fused.heldout_errors,
        fused.single_heldout_errors,
    )
    assert fused.better_than_single is all(wins)
    assert fused.texture.shape == (256, 256, 3) and (fused.texture_weight > 0).mean() > 0.3


def test_two_views_fuse_without_a_held_out_check():
    rec, views = _views("hrn_celebahq_same_person")
    fused = rec.fuse(views[:2])
    assert fused.heldout_errors is None and fused.better_than_single is None
    assert len(fused.view_errors) == 2
