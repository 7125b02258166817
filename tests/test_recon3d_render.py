"""Offscreen pyrender pictures: overlay on the photo, turntable, landmark plot (skipped without EGL)."""

from __future__ import annotations

import io

import numpy as np
import pytest


@pytest.fixture(scope="module")
def egl():
    from facedata.recon3d import render

    try:
        render._renderer(64, 64)
    except render.RenderUnavailable as exc:
        pytest.skip(str(exc))
    return render


@pytest.mark.shared
def test_overlay_covers_the_projected_mesh_only(egl):
    from facedata.recon3d.dense import Camera, load_sfm

    sfm = load_sfm()
    photo = np.zeros((300, 400, 3), np.uint8)
    cam = Camera(1.0, np.eye(3), np.array([150.0, 160.0]))
    verts = cam.project(sfm.mean)
    out = egl.overlay(photo, verts, sfm.triangles)
    assert out.shape == photo.shape
    painted = out.max(axis=2) > 0
    ys, xs = np.nonzero(painted)
    lo, hi = verts[:, :2].min(axis=0), verts[:, :2].max(axis=0)
    assert xs.min() >= lo[0] - 2 and xs.max() <= hi[0] + 2 and ys.min() >= lo[1] - 2 and ys.max() <= hi[1] + 2
    assert painted.mean() > 0.2 * np.prod(hi - lo) / (300 * 400)
    small = egl.overlay(np.zeros((1200, 1600, 3), np.uint8), verts * 4, sfm.triangles, max_side=400)
    assert small.shape == (300, 400, 3)


@pytest.mark.shared
def test_turntable_frames_turn_and_make_a_gif(egl):
    from PIL import Image

    from facedata.recon3d.dense import load_sfm

    sfm = load_sfm()
    tex = np.full((64, 64, 3), 180, np.uint8)
    frames = egl.turntable(sfm.mean, sfm.triangles, sfm.uv, tex, frames=6, size=96)
    assert len(frames) == 6 and frames[0].shape == (96, 96, 3)
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 2  # different angles
    gif = Image.open(io.BytesIO(egl.gif_bytes(frames)))
    assert gif.n_frames == 6


def test_landmark_plot_draws_on_a_crop():
    from facedata.recon3d import render

    photo = np.zeros((400, 400, 3), np.uint8)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(150, 250, 68), rng.uniform(150, 250, 68), np.zeros(68)])
    img = render.landmark_plot(photo, pts, pose=(10.0, 5.0, 0.0), gaze=(20.0, -5.0), size=200)
    assert img.shape == (200, 200, 3) and (img > 0).any(axis=2).mean() > 0.01
