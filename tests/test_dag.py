"""The stage DAG: dvc.yaml is rendered from it, stages run in dependency order, params match the runner."""

from __future__ import annotations

import yaml

from facedata.pipeline.dag import STAGE_DEFS, read_dag, render_dvc_yaml
from facedata.pipeline.runner import STAGES, TRACKED_PARAMS

from .conftest import REPO


def test_repo_dvc_yaml_is_rendered_from_the_dag():
    assert (REPO / "dvc.yaml").read_text() == render_dvc_yaml(code_deps=True), (
        "dvc.yaml is out of date: run `facedata dvc-yaml --write`"
    )


def test_every_stage_has_an_entry_point_and_code_deps_exist():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        assert (REPO / "stages" / f"{name}.py").is_file()
        for dep in stage["deps"]:
            if dep.startswith(("src/", "stages/")):
                assert (REPO / dep).exists(), f"{name} depends on missing {dep}"


def test_dag_order_follows_deps():
    order = read_dag(REPO / "dvc.yaml")
    assert order == list(STAGES)
    pos = {s: i for i, s in enumerate(order)}
    outs = {o: s.name for s in STAGE_DEFS for o in s.outs}
    for s in STAGE_DEFS:
        for d in s.deps:
            if d in outs:
                assert pos[outs[d]] < pos[s.name]


def test_read_dag_handles_reordered_file_and_cycles(tmp_path):
    doc = {
        "stages": {
            "b": {"cmd": "x", "deps": ["out_a"], "outs": ["out_b"]},
            "a": {"cmd": "x", "deps": ["input"], "outs": ["out_a"]},
            "c": {"cmd": "x", "deps": ["out_b/file.txt"], "outs": ["out_c"]},
        }
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    assert read_dag(tmp_path / "dvc.yaml") == ["a", "b", "c"]
    doc["stages"]["a"]["deps"] = ["out_c"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    import pytest

    with pytest.raises(ValueError, match="cycle"):
        read_dag(tmp_path / "dvc.yaml")


def test_tracked_params_come_from_the_dag():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        if name == "check":
            assert stage["params"][0] == {"params.yaml": None}  # the whole file: unknown sections too
        else:
            assert [p for p in stage["params"] if isinstance(p, str)] == TRACKED_PARAMS[name]


def test_every_stage_waits_for_the_params_check():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert read_dag(REPO / "dvc.yaml")[0] == "check"
    for name, stage in doc["stages"].items():
        assert (name == "check") != ("data/reports/params_check.txt" in stage["deps"]), name
