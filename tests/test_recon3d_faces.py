"""Per-face results and statuses (bad input never crashes, meshes only under the fit threshold), the files of
one face, and the `facedata face3d` / `facedata evaluate 3d` commands."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from .recon3d_helpers import AFLW, MULTIVIEW, boxes_of, defaults, read_rgb, reconstructor

pytestmark = pytest.mark.shared

FRONTAL = AFLW / "image00050.jpg"


def _one(rec, rgb, box):
    return rec.faces([rgb], [np.asarray(box, dtype=float).reshape(1, 4)])[0][0]


def test_an_ordinary_face_gets_everything_and_its_files(tmp_path):
    rec = reconstructor()
    rgb = read_rgb(FRONTAL)
    r = _one(rec, rgb, boxes_of(str(FRONTAL))[0])
    assert r.status == "ok", r.reason
    assert r.fit.landmarks.shape == (68, 3) and r.fit.params.shape == (62,)
    assert abs(r.fit.pose[0]) < 15 and r.fit_error < defaults("recon3d")["max_fit_error"]
    assert r.gaze.status == "ok"
    files = rec.write_face(r, tmp_path / "face0", {"image": "x"})
    assert {"obj", "mtl", "texture", "glb", "landmarks", "json"} <= set(files)
    summary = json.loads(files["json"].read_text())
    assert summary["status"] == "ok" and summary["image"] == "x"
    assert len(summary["landmarks68"]) == 68 and summary["dense_fit"]["error_percent"] == pytest.approx(
        r.fit_error, abs=1e-3
    )
    # the dense fit's projected landmarks (training labels) sit close to the regressor's
    fl = r.fit_landmarks()
    assert np.linalg.norm(fl - r.fit.landmarks[:, :2], axis=1).mean() / np.sqrt(np.prod(np.ptp(fl, axis=0))) < 0.03


def test_bad_input_gets_a_status_per_face_and_no_mesh(tmp_path):
    rec = reconstructor()
    rgb = read_rgb(FRONTAL)
    box = boxes_of(str(FRONTAL))[0]
    h, w = rgb.shape[:2]

    tiny = _one(rec, rgb, [10, 10, 30, 30])
    assert tiny.status == "tiny_face" and tiny.fit is None

    # the face cut by the photo's right border: keep only the left 55% of the face box
    x_cut = int(box[0] + 0.55 * (box[2] - box[0]))
    cut = _one(rec, np.ascontiguousarray(rgb[:, :x_cut]), box)
    assert cut.status == "cut_by_border" and cut.fit is not None and cut.dense is None

    profile = AFLW / "image00475.jpg"  # yaw ~66
    strict = reconstructor(max_yaw=45.0)
    ext = _one(strict, read_rgb(profile), boxes_of(str(profile))[0])
    assert ext.status == "extreme_pose" and ext.dense is not None and ext.texture is None

    picky = reconstructor(max_fit_error=0.2)
    failed = _one(picky, rgb, box)
    assert failed.status == "fit_failed" and "max_fit_error" in failed.reason

    for r, name in ((tiny, "tiny"), (cut, "cut"), (ext, "ext"), (failed, "failed")):
        files = rec.write_face(r, tmp_path / name)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["face3d.json"], name
        assert json.loads(files["json"].read_text())["status"] == r.status
    del h, w


def test_one_failing_face_does_not_stop_the_others(monkeypatch):
    from facedata.recon3d import dense

    rec = reconstructor()
    rgb = read_rgb(FRONTAL)
    box = boxes_of(str(FRONTAL))[0]
    real_fit = dense.fit
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise FloatingPointError("synthetic failure")
        return real_fit(*a, **k)

    monkeypatch.setattr(dense, "fit", flaky)
    results = rec.faces([rgb, rgb], [box[None], box[None]])
    assert [r[0].status for r in results] == ["error", "ok"]
    assert "synthetic failure" in results[0][0].reason


def _cli(args, tmp_path):
    from click.testing import CliRunner

    from facedata.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_face3d_command_multiview_and_bad_photos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no project here: every param at its default
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    views = sorted((MULTIVIEW / "hrn_celebahq_same_person").glob("*.jpg"))
    res = _cli(
        ["face3d", *map(str, views), str(blank), str(broken), "--multiview", "--out", "out", "--json"], tmp_path
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "face3d.json").read_text())
    by_name = {e["name"]: e for e in report["images"]}
    assert by_name["blank"]["status"] == "no_face" and by_name["broken"]["status"] == "unreadable"
    for v in views:
        faces = by_name[v.stem]["faces"]
        assert faces[0]["status"] == "ok"
        assert (tmp_path / "out" / v.stem / "face0" / "mesh.obj").exists()
        assert (tmp_path / "out" / v.stem / "face0" / "overlay.png").exists()
    fused = report["fused"]
    # the CelebA-HQ man: the other two views fused explain each held-out view better than their single fits
    assert fused["status"] == "ok" and fused["fused_better_on_every_heldout_view"]
    assert all(f < s for f, s in zip(fused["heldout_errors"], fused["single_heldout_errors"], strict=True))
    for name in (
        "mesh.obj",
        "mesh.mtl",
        "texture.png",
        "mesh.glb",
        "landmarks68.xyz",
        "turntable.gif",
        "fused3d.json",
    ):
        assert (tmp_path / "out" / "fused" / name).exists(), name

    only_bad = _cli(["face3d", str(blank), "--out", "out2"], tmp_path)
    assert only_bad.exit_code == 1 and "no_face" in only_bad.output


def test_evaluate_3d_command_writes_the_documented_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "aflw"
    sub.mkdir()
    for stem in ("image00050", "image00514"):
        for ext in (".jpg", ".mat"):
            (sub / f"{stem}{ext}").write_bytes((AFLW / f"{stem}{ext}").read_bytes())
    res = _cli(["evaluate", "3d", "--aflw2000", str(sub), "--json", "r.json"], tmp_path)
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert {"nme_mean", "nme_by_yaw", "n_images", "n_failed", "ms_per_face"} <= set(r)
    assert r["n_images"] == 2 and r["n_failed"] == 0 and r["nme_mean"] < 3.5
    missing = _cli(["evaluate", "3d", "--aflw2000", str(tmp_path / "nope")], tmp_path)
    assert missing.exit_code == 2 and "AFLW2000" in missing.output
