"""Evaluation maths (pairs parsing, folds, thresholds, TAR@FAR, the labelled-face rule) and the two
`facedata evaluate` commands on real LFW images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.faces.evaluate import (
    PairsError,
    assign_folds,
    best_threshold,
    labelled_face_index,
    parse_pairs,
    verification_metrics,
)


def test_parse_pairs_both_line_kinds_and_header(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("2\t2\nAnn\t1\t3\nBob\t2\t4\n\nAnn\t1\tBob\t12\nCid\t1\tDee\t2\nEve\t1\t2\nFay\t1\tGus\t3\n")
    pairs = parse_pairs(f)
    assert [(p.a, p.b, p.same) for p in pairs[:3]] == [
        ("Ann/Ann_0001.jpg", "Ann/Ann_0003.jpg", True),
        ("Bob/Bob_0002.jpg", "Bob/Bob_0004.jpg", True),
        ("Ann/Ann_0001.jpg", "Bob/Bob_0012.jpg", False),
    ]
    assert len(parse_pairs(f, limit=2)) == 2
    f.write_text("Ann\t1\nBob 1 2\n")
    with pytest.raises(PairsError, match=r"pairs.txt:1"):
        parse_pairs(f)
    f.write_text("Ann x 2\n")
    with pytest.raises(PairsError):
        parse_pairs(f)


def test_folds_follow_lfw_structure_else_blocks():
    lfw_like = ([True] * 3 + [False] * 3) * 10
    assert assign_folds(lfw_like) == [i // 6 for i in range(60)]
    assert assign_folds([True] * 20) == [i // 2 for i in range(20)]


def test_threshold_and_accuracy_on_separable_and_noisy_data():
    rng = np.random.default_rng(0)
    same = np.array([True] * 300 + [False] * 300)
    d = np.where(same, rng.uniform(0.1, 0.4, 600), rng.uniform(0.5, 0.9, 600))
    t = best_threshold(d, same)
    assert 0.4 <= t <= 0.5
    folds = np.array(assign_folds(list(same)))
    m = verification_metrics(d, same, folds)
    assert m["accuracy"] == 1.0 and m["tar_at_far_1e-3"] == 1.0 and m["n_pairs"] == 600
    d2 = d.copy()
    d2[:10] = 0.95  # ten same-person pairs look different
    assert verification_metrics(d2, same, folds)["accuracy"] == pytest.approx(590 / 600, abs=0.002)


def test_failed_pairs_count_as_errors_and_tar_at_far():
    same = np.array([True] * 6 + [False] * 1000)
    d = np.concatenate([[0.1, 0.2, 0.3, 0.45, 0.6, np.inf], np.linspace(0.4, 2.0, 1000)])
    m = verification_metrics(d, same, np.arange(len(d)) % 10)
    assert m["n_failed_pairs"] == 1
    # at FAR 1e-3 one of 1000 negatives may pass: threshold is the 2nd smallest negative distance
    assert m["threshold_at_far_1e-3"] == pytest.approx(np.linspace(0.4, 2.0, 1000)[1], abs=1e-5)
    assert m["tar_at_far_1e-3"] == pytest.approx(3 / 6, abs=1e-4)


def test_labelled_face_is_the_centred_one_or_the_labelled_box():
    boxes = np.array([[0, 0, 40, 40], [80, 70, 180, 190], [100, 100, 140, 140]], np.float64)
    assert labelled_face_index(boxes, 250, 250) == 1  # both contain the centre; nearer centre wins
    assert labelled_face_index(boxes[:1], 250, 250) == -1
    assert labelled_face_index(np.zeros((0, 4)), 250, 250) == -1
    assert labelled_face_index(boxes, 250, 250, np.array([2, 0, 40, 42])) == 0
    assert labelled_face_index(boxes, 250, 250, np.array([200, 200, 250, 250])) == -1


@pytest.mark.shared
def test_evaluate_verification_command(lfw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no project here: the defaults are used
    out = tmp_path / "v.json"
    res = CliRunner().invoke(
        main,
        [
            "evaluate",
            "verification",
            "--pairs",
            str(lfw / "pairs_shared.txt"),
            "--root",
            str(lfw),
            "--limit",
            "60",
            "--workers",
            "1",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    for key in ("accuracy", "tar_at_far_1e-3", "n_pairs", "n_failed_images"):
        assert key in result
    assert result["n_pairs"] == 60 and result["n_failed_images"] == 0 and result["align_views"] == []
    assert result["accuracy"] >= 0.95


@pytest.mark.shared
def test_evaluate_verification_takes_set_overrides(lfw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "verification", "--pairs", str(lfw / "pairs_shared.txt"), "--root", str(lfw)]
    out = tmp_path / "v.json"
    res = CliRunner().invoke(
        main, [*args, "--limit", "6", "--workers", "1", "--set", "embed.jitter=1", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "with embed.jitter=1" in res.output and json.loads(out.read_text())["jitter"] == 1
    for bad, says in (("embed.jitter=99", "embed.jitter"), ("jitter=1", "SECTION.KEY=VALUE")):
        res = CliRunner().invoke(main, [*args, "--set", bad])
        assert res.exit_code == 2 and says in res.output, res.output


@pytest.mark.shared
def test_evaluate_detection_command_uses_project_params(lfw, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "imgs"
    for name in ("Colin_Powell", "Meryl_Streep"):
        (folder / name).mkdir(parents=True)
        for p in sorted((lfw / name).glob("*.jpg"))[:3]:
            shutil.copy(p, folder / name / p.name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("detect:\n  detector: yunet\n  workers: 1\n")
    monkeypatch.chdir(project)
    res = CliRunner().invoke(main, ["evaluate", "detection", "--labeled-dir", str(folder), "--json", "d.json"])
    assert res.exit_code == 0, res.output
    result = json.loads((project / "d.json").read_text())
    assert result["detector"] == "yunet"  # the project's params, not the default
    assert result["n_images"] == 7 and result["n_failed_images"] == 1
    assert result["detection_rate"] == pytest.approx(6 / 7, abs=1e-4)
    assert any(m.startswith("broken.jpg") for m in result["missed"])
