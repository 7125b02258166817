"""Stage train (issue 18) on synthetic datasets: losses, sample weights, metrics, determinism, resume after a
kill, ONNX parity (head and fine-tuned backbone), model card, DVC plots."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from facedata.pipeline.runner import run_stage
from facedata.train import evaluate as ev
from facedata.train.config import TrainConfig
from facedata.train.data import load, sample_weights
from facedata.train.losses import margin_logits, negative_loss, weighted_cross_entropy

from .projects import BIN, env, kill_once_written
from .train_helpers import synthetic_project

MODEL = ("data", "models", "recognizer", "model.pt")


def test_margin_logits():
    cos = torch.tensor([[0.9, 0.5], [0.2, 0.8]])
    y = torch.tensor([0, 1])
    cf = margin_logits(cos, y, "cosface", 10.0, 0.2)
    assert torch.allclose(cf, torch.tensor([[7.0, 5.0], [2.0, 6.0]]))
    af = margin_logits(cos, y, "arcface", 10.0, 0.3)
    assert math.isclose(af[0, 0].item(), 10 * math.cos(math.acos(0.9) + 0.3), rel_tol=1e-5)
    assert math.isclose(af[0, 1].item(), 5.0, rel_tol=1e-6)  # only the target is penalised
    # past pi - m the arcface target logit keeps falling with the angle (insightface's fallback), no jump up
    far = margin_logits(torch.tensor([[-0.99, 0.0]]), torch.tensor([0]), "arcface", 1.0, 0.5)
    assert far[0, 0] < -0.99
    with pytest.raises(ValueError, match="unknown loss"):
        margin_logits(cos, y, "softmax", 1.0, 0.1)


def test_weighted_cross_entropy_ignores_zero_weight_samples():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    y = torch.tensor([0, 0])
    only_first = weighted_cross_entropy(logits, y, torch.tensor([1.0, 0.0]))
    assert torch.allclose(only_first, torch.nn.functional.cross_entropy(logits[:1], y[:1]))


def test_negative_loss_prefers_strangers_below_the_unknown_score():
    b = torch.tensor(0.8)
    near = negative_loss(torch.tensor([[0.95, 0.3]]), b, 30.0, 0.1)
    far = negative_loss(torch.tensor([[0.3, 0.2]]), b, 30.0, 0.1)
    assert far < near


def test_sample_weights_from_review_columns():
    cfg = TrainConfig(weight_reviewed=2.0, weight_unreviewed=1.0, confidence_weighting=True)
    review = {
        "reviewed": [True, True, False, False, True],
        "review_decision": ["accepted", "rejected", None, None, "moved"],
        "reviewer": ["ann", "ann", None, None, "bob"],
        "auto_confidence": [None, None, 0.5, None, 0.9],
    }
    assert sample_weights(review, 5, cfg).tolist() == [2.0, 0.0, 0.5, 1.0, 2.0]
    no_conf = TrainConfig(weight_reviewed=2.0, weight_unreviewed=1.0, confidence_weighting=False)
    assert sample_weights(review, 5, no_conf).tolist() == [2.0, 0.0, 1.0, 1.0, 2.0]
    assert sample_weights({}, 3, cfg).tolist() == [1.0, 1.0, 1.0]  # no review yet: every face counts once


def test_open_set_metrics():
    # 3 test faces of classes 0, 1, 1 (the third misidentified); impostors' best scores
    scores = np.array([[0.9, 0.1], [0.2, 0.7], [0.95, 0.5]])
    y = np.array([0, 1, 1])
    impostors = np.array([0.8, 0.6, 0.3, 0.2] + [0.1] * 96)  # 100 impostors: FAR 1e-2 lets 1 through
    m = ev.identification(scores, y, impostors, n_missed=1)
    assert m["top1"] == 0.5  # 2 right of 4 (the missed face counts)
    assert m["threshold_at_far_1e-2"] == 0.6  # the 2nd highest impostor: only 0.8 is above it
    assert m["tar_at_far_1e-2"] == 0.5  # 0.9 and 0.7 clear 0.6
    assert m["threshold_at_far_1e-3"] == 0.8 and m["tar_at_far_1e-3"] == 0.25
    assert ev.leave_class_out(scores, y).tolist() == [0.1, 0.2, 0.95]
    assert ev.far_key(1e-2) == "1e-2"


def test_load_reads_review_columns_when_present(tmp_path):
    n = 6 * 12
    review = {
        "reviewed": [i % 3 == 0 for i in range(n)],
        "review_decision": ["accepted" if i % 3 == 0 else None for i in range(n)],
        "reviewer": ["ann" if i % 3 == 0 else None for i in range(n)],
        "auto_confidence": [None if i % 3 == 0 else 0.5 for i in range(n)],
    }
    root = synthetic_project(tmp_path / "p", review=review)
    data = load(root, "dlib-resnet", TrainConfig())
    assert data.review["has_review_columns"] and data.review["n_reviewed"] == 24
    assert data.review["decisions"] == {"accepted": 24}
    assert sorted(set(data.weights.tolist())) == [0.5, 1.0]
    plain = load(synthetic_project(tmp_path / "q"), "dlib-resnet", TrainConfig())
    assert not plain.review["has_review_columns"] and set(plain.weights.tolist()) == {1.0}


def test_train_stage_metrics_model_card_plots_and_onnx(tmp_path):
    root = synthetic_project(tmp_path / "p", train={"epochs": 3})
    assert run_stage("train", root) == 0
    m = json.loads((root / "data" / "metrics" / "train.json").read_text())
    assert m["ok"] and m["mode"] == "head" and m["n_classes"] == 6 and m["epochs_run"] == 3
    for key in ("top1", "tar_at_far_1e-2", "tar_at_far_1e-3", "threshold"):
        assert isinstance(m[key], float), key
    assert m["baseline"]["top1"] is not None and m["open_set_protocol"].startswith("leave_class_out")
    assert m["onnx_max_abs_diff"] < 1e-4
    out = root / "data" / "models" / "recognizer"
    card = (out / "MODEL_CARD.md").read_text()
    assert (
        "dataset.parquet" in card and "CC0" in card and "not stated: 72" in card and "human review: none" in card
    )
    assert json.loads((out / "model_card.json").read_text())["classes"] == [f"person_{i}" for i in range(6)]
    plot = (root / "data" / "plots" / "train.csv").read_text().splitlines()
    assert plot[0] == "epoch,lr,train_loss,train_top1,val_loss,val_top1" and len(plot) == 1 + 4  # epochs 0..3


def test_onnx_model_matches_torch_on_new_inputs(tmp_path):
    import onnxruntime as ort

    from facedata.train.export import load as load_model

    root = synthetic_project(tmp_path / "p", train={"epochs": 2})
    assert run_stage("train", root) == 0
    net, meta = load_model(root.joinpath(*MODEL))
    x = torch.nn.functional.normalize(torch.randn(5, 128), dim=1)
    with torch.no_grad():
        z, scores = net(x)
    sess = ort.InferenceSession(
        str(root / "data/models/recognizer/model.onnx"), providers=["CPUExecutionProvider"]
    )
    got_z, got_s = sess.run(["embedding", "scores"], {meta["input"]: x.numpy()})
    assert np.abs(got_z - z.numpy()).max() < 1e-5 and np.abs(got_s - scores.numpy()).max() < 1e-5


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_two_runs_give_identical_weights(tmp_path):
    a = synthetic_project(tmp_path / "a", train={"epochs": 4})
    b = synthetic_project(tmp_path / "b", train={"epochs": 4})
    assert run_stage("train", a) == 0 and run_stage("train", b) == 0
    wa, wb = _weights(a.joinpath(*MODEL)), _weights(b.joinpath(*MODEL))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = synthetic_project(tmp_path / "c", train={"epochs": 4, "seed": 1})
    assert run_stage("train", c) == 0
    assert not torch.equal(_weights(c.joinpath(*MODEL))["mlp.0.weight"], wa["mlp.0.weight"])
    # a rebuild (`dvc repro -f train`) writes the same bytes: times and the device are in the run report only
    out = a / "data" / "models" / "recognizer"
    files = [out / n for n in ("model_card.json", "MODEL_CARD.md", "model.pt", "model.onnx")]
    files.append(a / "data" / "metrics" / "train.json")
    before = {f: f.read_bytes() for f in files}
    assert run_stage("train", a) == 0
    assert {f: f.read_bytes() for f in files} == before
    report = json.loads((a / "data" / "reports" / "runs" / "train.json").read_text())
    assert report["train_seconds"] >= 0 and report["device"] == "cpu"


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path):
    """kill -9 after the first checkpoints; the rerun continues from the last one and ends with the weights of
    an uninterrupted run."""
    settings = {"epochs": 40, "batch_size": 8}
    killed = synthetic_project(tmp_path / "killed", n_ids=8, per_id=40, train=settings)
    whole = synthetic_project(tmp_path / "whole", n_ids=8, per_id=40, train=settings)
    ckpt = killed / "data" / "cache" / "train" / "checkpoint.pt"
    cmd = [sys.executable, "-m", "facedata.cli", "stage", "train", "--root", str(killed)]
    kill_once_written(cmd, ckpt, cwd=killed, settle=0.5)
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < 40
    rerun = subprocess.run(cmd, cwd=killed, env=env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming after epoch" in rerun.stdout + rerun.stderr
    assert run_stage("train", whole) == 0
    wk, ww = _weights(killed.joinpath(*MODEL)), _weights(whole.joinpath(*MODEL))
    assert all(torch.equal(wk[k], ww[k]) for k in ww)
    history = json.loads((killed / "data" / "metrics" / "train.json").read_text())
    assert history["epochs_run"] == 40


def test_checkpoint_of_other_data_is_not_resumed(tmp_path):
    root = synthetic_project(tmp_path / "p", train={"epochs": 2})
    assert run_stage("train", root) == 0
    ckpt = root / "data" / "cache" / "train" / "checkpoint.pt"
    first = torch.load(ckpt, weights_only=True)["origin"]
    import yaml

    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["train"]["margin"] = 0.3
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    assert run_stage("train", root) == 0
    assert torch.load(ckpt, weights_only=True)["origin"] != first


def test_finetune_mode_trains_the_backbone_and_exports_it(tmp_path):
    """Fine-tuning at toy size on the CPU: the dlib ResNet's weights move, the ONNX export matches torch, and
    the ONNX model works as an `onnx:` embedding model."""
    from facedata.embed.onnx import OnnxEmbedder
    from facedata.train.export import dlib_backbone
    from facedata.train.export import load as load_model

    root = synthetic_project(
        tmp_path / "p", n_ids=2, per_id=4, crops=True, train={"mode": "finetune", "epochs": 1, "batch_size": 4}
    )
    assert run_stage("train", root) == 0
    m = json.loads((root / "data" / "metrics" / "train.json").read_text())
    assert m["mode"] == "finetune" and m["onnx_max_abs_diff"] < 1e-3
    net, meta = load_model(root.joinpath(*MODEL))
    base = dlib_backbone()
    assert not torch.equal(net.backbone.convs[0].weight, base.convs[0].weight)
    crop = np.random.default_rng(0).integers(0, 256, size=(150, 150, 3), dtype=np.uint8)
    emb = OnnxEmbedder(root / "data/models/recognizer/model.onnx", meta["onnx_input"])
    mean = net.backbone.mean.reshape(3).numpy()
    x = torch.from_numpy(((crop.astype(np.float32) - mean) / 256.0).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        want = net.embed(x).numpy()
    assert np.abs(emb.embed([crop]) - want).max() < 1e-3


def test_too_few_identities_fail_the_stage(tmp_path, capsys):
    root = synthetic_project(tmp_path / "p", n_ids=1)
    assert run_stage("train", root) == 1
    assert "needs at least 2" in capsys.readouterr().err
    assert json.loads((root / "data/metrics/train.json").read_text())["ok"] is False


@pytest.mark.slow
def test_dvc_repro_runs_train_and_plots_show_renders(tmp_path):
    root = synthetic_project(tmp_path / "p", git=True, train={"epochs": 3})
    run = lambda *a: subprocess.run(  # noqa: E731
        [str(BIN / "dvc"), *a], cwd=root, env=env(), capture_output=True, text=True, timeout=600
    )
    assert run("repro", "--single-item", "check").returncode == 0  # every stage waits for the params check
    out = run("repro", "--single-item", "train")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Running stage 'train'" in out.stdout
    shown = run("plots", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    plots = json.loads(shown.stdout)["data"]
    values = plots["train top-1"][0]["content"]["data"]["values"]
    assert {v["field"] for v in values} == {"train_top1", "val_top1"} and len(values) == 2 * 4
    html = run("plots", "show", "-o", str(tmp_path / "plots"))
    assert html.returncode == 0 and "val_loss" in (tmp_path / "plots" / "index.html").read_text()
    metrics = run("metrics", "show", "--json")
    assert "top1" in metrics.stdout


@pytest.mark.slow
@pytest.mark.shared
def test_finetune_verifies_the_new_embedding_on_lfw_pairs(tmp_path, lfw):
    pairs = lfw / "pairs_shared.txt"
    root = synthetic_project(
        tmp_path / "p",
        n_ids=2,
        per_id=4,
        crops=True,
        train={"mode": "finetune", "epochs": 1, "eval_pairs": str(pairs), "eval_pairs_limit": 6},
    )
    assert run_stage("train", root) == 0
    v = json.loads((root / "data" / "metrics" / "train.json").read_text())["verification"]
    assert "6 pairs" in v["pairs"]
    for key in ("before", "after"):
        assert v[key]["n_pairs"] == 6 and v[key]["n_failed_pairs"] == 0 and 0 <= v[key]["accuracy"] <= 1
    assert "LFW-style pairs" in (root / "data" / "models" / "recognizer" / "MODEL_CARD.md").read_text()


def test_train_recognizer_command(tmp_path):
    root = synthetic_project(tmp_path / "p")
    out = tmp_path / "centroid"
    cmd = [str(BIN / "facedata"), "train", "recognizer", "--root", str(root), "--mode", "centroid"]
    proc = subprocess.run(
        [*cmd, "--out", str(out), "--json"], env=env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["mode"] == "centroid" and m["epochs_run"] == 0 and m["top1"] == m["baseline"]["top1"]
    assert (out / "model.pt").is_file() and (out / "model.onnx").is_file() and (out / "metrics.json").is_file()
    bad = subprocess.run([*cmd, "--set", "train.margin=5"], env=env(), capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "train.margin must be 0..1" in bad.stderr
