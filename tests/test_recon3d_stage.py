"""Stage reconstruct3d on a small real project (meshes manifest, lineage, reuse, report artifact), and a tiny
CPU run of `facedata train 3d` that trains and resumes exactly."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pytest

from .projects import run_report
from .recon3d_helpers import AFLW, MULTIVIEW, boxes_of

pytestmark = [pytest.mark.shared, pytest.mark.slow]

PEOPLE = {
    "man": sorted((MULTIVIEW / "hrn_celebahq_same_person").glob("*.jpg")),
    "emma": sorted((MULTIVIEW / "emma_watson_3ddfa").glob("*.jpg")),
    "solo": [AFLW / "image00050.jpg"],
}


def _make_project(root):
    """A project whose export stage has 'run': stored photos and a dataset manifest of their faces."""
    from facedata import manifest, store
    from facedata.ids import face_id, sha256_bytes
    from facedata.lineage import make_lineage
    from facedata.pipeline.scaffold import init_project

    init_project(root, {"folders": [], "videos": []}, git=False)
    lin = make_lineage("export", "test", root)
    rows = []
    for identity, paths in PEOPLE.items():
        for path in paths:
            data = path.read_bytes()
            image_id, rel, _ = store.put_image(data, ".jpg", root)
            box = [float(v) for v in boxes_of(str(path))[0]]
            fid = face_id(image_id, "mtcnn", box)
            rows.append(
                {
                    "face_id": fid,
                    "identity": identity,
                    "split": "train",
                    "file_path": f"train/{identity}/{fid}.png",
                    "file_sha256": sha256_bytes(data),
                    "image_id": image_id,
                    "cluster_id": "c" + identity,
                    "store_path": rel.as_posix(),
                    "detector": "mtcnn",
                    "x1": box[0],
                    "y1": box[1],
                    "x2": box[2],
                    "y2": box[3],
                    "embedding_model": "dlib-resnet",
                    "source_kind": "folder",
                    "source_uri": str(path),
                    "fetched_at": dt.datetime.now(dt.UTC),
                    "lineage": lin,
                    "image_lineage": lin,
                    "face_lineage": lin,
                    "embedding_lineage": lin,
                    "cluster_lineage": lin,
                }
            )
    manifest.write("dataset", manifest.from_rows("dataset", rows), root)
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from facedata import manifest
    from facedata.pipeline.runner import run_stage

    root = tmp_path_factory.mktemp("proj3d")
    rows = _make_project(root)
    assert run_stage("reconstruct3d", root) == 0
    return root, rows, manifest.read("meshes", root).to_pylist()


def test_stage_writes_a_row_and_files_per_face_and_a_fused_mesh_per_identity(project):
    root, dataset, meshes = project
    faces = [r for r in meshes if r["kind"] == "face"]
    fused = {r["identity"]: r for r in meshes if r["kind"] == "fused"}
    assert sorted(r["face_id"] for r in faces) == sorted(r["face_id"] for r in dataset)
    for r in faces:
        assert r["status"] == "ok", r["reason"]
        assert len(r["landmarks68"]) == 204 and len(r["fit_landmarks68"]) == 136 and len(r["params62"]) == 62
        assert r["yaw"] is not None and r["gaze_status"] is not None and r["fit_error"] < 4.0
        for key in ("obj_path", "glb_path", "texture_path", "landmarks_path", "json_path"):
            assert (root / r[key]).is_file(), key
        assert r["lineage"]["stage"] == "reconstruct3d" and r["lineage"]["model_name"] == "3ddfa-v2-mb05+sfm-3448"
    assert set(fused) == {"man", "emma"}  # 'solo' has one view
    for r in fused.values():
        assert r["n_views"] == 3 and (root / r["obj_path"]).is_file()
        assert len(r["heldout_errors"]) == len(r["single_heldout_errors"]) == 3
        wins = [f < s for f, s in zip(r["heldout_errors"], r["single_heldout_errors"], strict=True)]
        assert r["fused_better"] is all(wins) and (r["reason"] is None) is all(wins)
        assert set(r["face_ids"]) <= {d["face_id"] for d in dataset}
    assert fused["man"]["fused_better"]  # leave-one-view-out on every view (see test_recon3d_dense)
    metrics = json.loads((root / "data" / "metrics" / "reconstruct3d.json").read_text())
    assert metrics["ok"] and metrics["n_faces"] == 7 and metrics["n_fused_checked"] == 2
    assert metrics["n_fused_better_than_single"] == sum(r["fused_better"] for r in fused.values())


def test_stage_report_is_a_prefect_artifact_page(project, monkeypatch):
    from facedata.flows import build as flow

    root = project[0]
    page = root / "data" / "reports" / "reconstruct3d" / "reconstruct3d.artifact.md"
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") >= 6 and "data:image/gif;base64," in text
    assert any(p.suffix == ".gif" for p in page.parent.iterdir())
    published = []
    monkeypatch.setattr(flow, "create_markdown_artifact", lambda **kw: published.append(kw))
    assert flow.publish_report_artifacts(root, "reconstruct3d") == 1
    assert published[0]["key"] == "facedata-reconstruct3d-reconstruct3d" and published[0]["markdown"] == text


def test_stage_rerun_reuses_rows_and_redoes_only_what_is_missing(project):
    from facedata import manifest
    from facedata.pipeline.runner import run_stage

    root, dataset, meshes = project
    before = {r["mesh_id"]: r for r in meshes}
    page = root / "data" / "reports" / "reconstruct3d" / "reconstruct3d.artifact.md"
    first = page.read_text()
    shutil.rmtree(root / "data" / "reports" / "reconstruct3d")  # DVC removes a stage's outs before running it
    assert run_stage("reconstruct3d", root) == 0
    run = run_report(root, "reconstruct3d")
    assert run["n_processed"] == 0 and run["n_reused"] == 7
    # The report does not thin out when every face is reused: as many renders, and the turntable.
    again = page.read_text()
    assert again.count("data:image/jpeg;base64,") == first.count("data:image/jpeg;base64,") >= 6
    assert "data:image/gif;base64," in again
    victim = dataset[0]["face_id"]
    shutil.rmtree(root / "data" / "meshes" / "faces" / victim)
    assert run_stage("reconstruct3d", root) == 0
    assert run_report(root, "reconstruct3d")["n_processed"] == 1
    after = {r["mesh_id"]: r for r in manifest.read("meshes", root).to_pylist()}
    assert set(after) == set(before)
    assert (root / after[victim]["obj_path"]).is_file()
    assert np.allclose(after[victim]["landmarks68"], before[victim]["landmarks68"], atol=1e-3)


def test_rerun_after_a_face_changes_identity_follows_the_dataset(project):
    """Review or reclustering can move faces to another identity: reused meshes must carry the new one, and
    fusion must group by it (a stale identity once left a person without a fused mesh)."""
    from facedata import manifest
    from facedata.pipeline.runner import run_stage

    root, dataset, _ = project
    original = manifest.read("dataset", root)
    rename = {"man": "armie"}
    renamed = [{**r, "identity": rename.get(r["identity"], r["identity"])} for r in original.to_pylist()]
    manifest.write("dataset", manifest.from_rows("dataset", renamed), root)
    try:
        assert run_stage("reconstruct3d", root) == 0
        assert run_report(root, "reconstruct3d")["n_processed"] == 0  # geometry reused
        meshes = manifest.read("meshes", root).to_pylist()
        want = {r["face_id"]: r["identity"] for r in renamed}
        assert all(r["identity"] == want[r["face_id"]] for r in meshes if r["kind"] == "face")
        assert {r["identity"] for r in meshes if r["kind"] == "fused"} == {"armie", "emma"}
    finally:
        manifest.write("dataset", original, root)
        assert run_stage("reconstruct3d", root) == 0


def _train(root, out, steps, **kw):
    from facedata.recon3d.train import Train3DConfig, train

    kw = {"batch_size": 4, **kw}
    cfg = Train3DConfig(steps=steps, checkpoint_every=1, val_fraction=0.0, device="cpu", **kw)
    return train(root, out, cfg, log=lambda m: None)


def test_train_3d_resumes_exactly(project, tmp_path):
    import torch

    from facedata.recon3d import train as tr
    from facedata.recon3d.mobilenet import load_checkpoint
    from facedata.recon3d.regress import default_weights

    root = project[0]
    # resume: 1 step, then continue to 2  ==  2 steps straight
    first = _train(root, tmp_path / "a", 1)
    assert first["resumed_from_step"] == 0 and first["n_faces"] == 7
    assert _train(root, tmp_path / "a", 2)["resumed_from_step"] == 1
    _train(root, tmp_path / "b", 2)
    wa = torch.load(tmp_path / "a" / tr.MODEL, weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / tr.MODEL, weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    assert not all(torch.equal(wa[k], v) for k, v in load_checkpoint(default_weights()).state_dict().items())
    # a checkpoint from another configuration is refused, not silently mixed
    with pytest.raises(tr.TrainError):
        _train(root, tmp_path / "a", 3, lr=5e-6)


def test_train_3d_is_scored_on_faces_it_never_trained_on(project, tmp_path):
    """Trained on two people, scored on a third it never saw. What is true at this size (8 steps, 4 faces): it
    fits its training faces better, and the held-out number is reported as measured (here it does not
    improve; the benchmark measures it at a useful size, BENCHMARKS.md "train 3d")."""
    from facedata.recon3d import train as tr
    from facedata.recon3d.mobilenet import load_checkpoint

    root, dataset, _ = project
    who = {r["face_id"]: r["identity"] for r in dataset}
    samples = tr.load_samples(root)
    train_set = [s for s in samples if who[s.face_id] != "emma"]
    held_out = [s for s in samples if who[s.face_id] == "emma"]
    assert len(train_set) == 4 and len(held_out) == 3
    cfg = tr.Train3DConfig(steps=8, batch_size=4, jitter=0.0, teacher_weight=0.0, checkpoint_every=8, device="cpu")
    m = tr.train_samples(train_set, held_out, tmp_path / "c", cfg, log=lambda m: None)
    assert m["n_train"] == 4 and m["n_val"] == 3 and m["n_train_scored"] == 4
    assert m["train_nme_after"] < m["train_nme_before"]  # it learns what it is shown
    # the reported held-out NME is the fine-tuned network's on exactly the held-out faces
    batch = tr.make_batch(held_out, tr._Images(), None, 0.0)
    model = load_checkpoint(tmp_path / "c" / tr.MODEL)
    assert m["val_nme_after"] == pytest.approx(tr.landmark_nme(model, batch, tr._TorchBases("cpu")), abs=1e-4)
    assert m["val_nme_before"] != m["val_nme_after"]


def test_train_3d_command_needs_the_stage_output(tmp_path):
    from click.testing import CliRunner

    from facedata.cli import main
    from facedata.pipeline.scaffold import init_project

    init_project(tmp_path / "empty", {"folders": [], "videos": []}, git=False)
    res = CliRunner().invoke(main, ["train", "3d", "--root", str(tmp_path / "empty"), "--steps", "1"])
    assert res.exit_code == 1 and "reconstruct3d" in res.output


def test_train_3d_command_trains_on_the_project(project, tmp_path):
    from click.testing import CliRunner

    from facedata.cli import main

    root = project[0]
    out = tmp_path / "model"
    args = ["train", "3d", "--root", str(root), "--out", str(out), "--steps", "2", "--batch-size", "2", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output[res.output.index("{") :])
    assert metrics["steps"] == 2 and (out / "model.pt").is_file() and (out / "checkpoint.pt").is_file()
    # the fine-tuned weights load into the regressor used everywhere else
    from facedata.recon3d.regress import Regressor, RegressorConfig

    reg = Regressor(RegressorConfig(weights=str(out / "model.pt")))
    assert reg.version.startswith("finetuned:")


def test_dvc_yaml_has_the_stage_after_export():
    from facedata.pipeline.dag import read_dag, render_dvc_yaml

    from .conftest import REPO

    assert (REPO / "dvc.yaml").read_text() == render_dvc_yaml(code_deps=True)
    order = read_dag(REPO / "dvc.yaml")
    assert order.index("reconstruct3d") > order.index("export")
