"""Texture extraction and merging, mesh files (OBJ+MTL+PNG, GLB, landmarks), folder replacement."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.shared


def _frontal_camera(sfm, size=400):
    from facedata.recon3d.dense import Camera

    v = sfm.mean
    scale = 0.8 * size / np.ptp(v[:, 0])
    return Camera(scale, np.eye(3), np.array([size / 2, size / 2 + 10.0]))


def _turned(yaw_deg):
    y = np.radians(yaw_deg)
    return np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])


def test_uv_raster_covers_the_layout_with_valid_barycentrics():
    from facedata.recon3d import dense, texture

    sfm = dense.load_sfm()
    r = texture.uv_raster(sfm, 128)
    assert 0.5 < len(r.rows) / 128**2 < 0.95
    assert np.allclose(r.bary.sum(axis=1), 1, atol=1e-5) and (r.bary >= 0).all()
    # a texel's barycentric point lies where its uv says
    uv = np.einsum("mk,mkc->mc", r.bary, sfm.uv[r.tv]) * 128
    err = np.abs(uv - np.stack([r.cols + 0.5, r.rows + 0.5], 1))
    assert np.median(err) < 0.01 and np.percentile(err, 95) < 0.5 and err.max() < 2.5  # edges: clamped


def test_sampled_texture_reads_the_photo_where_the_mesh_lies():
    from facedata.recon3d import dense, texture

    sfm = dense.load_sfm()
    cam = _frontal_camera(sfm)
    yy, xx = np.mgrid[0:400, 0:400]
    photo = np.stack([xx * 255 // 399, yy * 255 // 399, np.full_like(xx, 77)], axis=2).astype(np.uint8)
    r = texture.uv_raster(sfm, 128)
    colours, weight = texture.sample_view(sfm, r, sfm.mean, cam, photo)
    seen = weight[r.rows, r.cols] > 0
    assert seen.mean() > 0.5
    pos = np.einsum("mk,mkc->mc", r.bary, cam.project(sfm.mean)[r.tv][:, :, :2])
    expect = np.stack([pos[:, 0] * 255 / 399, pos[:, 1] * 255 / 399], axis=1)
    got = colours[r.rows, r.cols][:, :2].astype(float)
    assert np.abs(got - expect)[seen].mean() < 1.5
    assert (colours[r.rows, r.cols][seen, 2] == 77).all()


def test_a_turned_view_hides_the_far_side_and_the_mirror_fills_it():
    from facedata.recon3d import dense, texture
    from facedata.recon3d.dense import Camera

    sfm = dense.load_sfm()
    cam = _frontal_camera(sfm)
    cam = Camera(cam.scale, _turned(60), cam.t)
    photo = np.full((400, 400, 3), 200, np.uint8)
    r = texture.uv_raster(sfm, 128)
    colours, weight = texture.sample_view(sfm, r, sfm.mean, cam, photo)
    left, right = weight[:, :64], weight[:, 64:]
    assert (left > 0).mean() < 0.5 * (right > 0).mean() or (right > 0).mean() < 0.5 * (left > 0).mean()
    merged, best = texture.merge([colours], [weight])
    covered = np.zeros((128, 128), bool)
    covered[r.rows, r.cols] = True
    unseen = covered & (best == 0) & (best[:, ::-1] > 0)  # hidden here, seen at the mirror texel
    assert unseen.sum() > 100
    assert np.abs(merged[unseen].astype(int) - 200).max() <= 2  # taken from the mirror, not left black


def test_two_views_merge_by_view_angle():
    from facedata.recon3d import dense, texture
    from facedata.recon3d.dense import Camera

    sfm = dense.load_sfm()
    base = _frontal_camera(sfm)
    r = texture.uv_raster(sfm, 128)
    a = texture.sample_view(
        sfm, r, sfm.mean, Camera(base.scale, _turned(45), base.t), np.full((400, 400, 3), 50, np.uint8)
    )
    b = texture.sample_view(
        sfm, r, sfm.mean, Camera(base.scale, _turned(-45), base.t), np.full((400, 400, 3), 250, np.uint8)
    )
    merged, _ = texture.merge([a[0], b[0]], [a[1], b[1]])
    only_a = (a[1] > 0.6) & (b[1] == 0)
    only_b = (b[1] > 0.6) & (a[1] == 0)
    assert only_a.sum() > 50 and only_b.sum() > 50
    assert (
        np.abs(merged[only_a].astype(int) - 50).max() <= 1 and np.abs(merged[only_b].astype(int) - 250).max() <= 1
    )
    both = (a[1] > 0.3) & (b[1] > 0.3)
    assert 50 < merged[both].mean() < 250


def test_mesh_files_load_back(tmp_path):
    import trimesh
    from PIL import Image

    from facedata.recon3d import dense, meshio

    sfm = dense.load_sfm()
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:, :32] = (255, 0, 0)
    lm = np.full((68, 3), np.nan)
    lm[:66] = sfm.mean[:66]
    files = meshio.write_mesh(tmp_path / "m", sfm.mean, sfm.triangles, sfm.uv, tex, lm)
    assert set(files) == {"obj", "mtl", "texture", "glb", "landmarks"}
    obj = trimesh.load(files["obj"], force="mesh", process=False)
    assert obj.vertices.shape == (3448, 3) and len(obj.faces) == 6736
    assert np.allclose(obj.vertices, sfm.mean, atol=1e-3)
    assert np.asarray(obj.visual.material.image).shape[:2] == (64, 64)
    glb = trimesh.load(files["glb"], force="mesh", process=False)
    assert glb.vertices.shape == (3448, 3) and glb.visual.uv.shape == (3448, 2)
    assert np.allclose(glb.visual.uv[:, 0], sfm.uv[:, 0], atol=1e-6)
    assert np.asarray(Image.open(files["texture"]))[0, 0].tolist() == [255, 0, 0]
    xyz = meshio.read_xyz(files["landmarks"])
    assert xyz.shape == (68, 3) and np.isnan(xyz[66:]).all() and np.allclose(xyz[:66], sfm.mean[:66], atol=1e-3)


def test_write_folder_replaces_the_whole_folder(tmp_path):
    from facedata.recon3d.meshio import write_folder

    write_folder(tmp_path / "f", {"a.txt": b"1", "b.txt": b"2"})
    write_folder(tmp_path / "f", {"a.txt": b"3"})
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["a.txt"]
    assert (tmp_path / "f" / "a.txt").read_bytes() == b"3"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary folders left behind
