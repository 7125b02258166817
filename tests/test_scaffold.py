"""`facedata init`: a project that validates, renders every parameter, and is a git + DVC repository."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from facedata import params
from facedata.cli import main
from facedata.lineage.codedeps import code_hash
from facedata.pipeline.dag import RUN_SH, render_dvc_yaml
from facedata.pipeline.scaffold import DVCIGNORE, init_project, render_params_yaml


def test_rendered_params_are_the_defaults():
    raw = yaml.safe_load(render_params_yaml({"folders": [{"root": "/photos"}], "videos": []}))
    validated = params.with_defaults(raw)
    for key, spec in params.SPEC.items():
        if not key.startswith("sources."):
            section, leaf = key.split(".", 1)
            assert validated[section][leaf] == spec.default, key
    assert validated["sources"]["folders"] == [{"root": "/photos"}]


def test_init_creates_a_runnable_project(tmp_path):
    photos = tmp_path / "photos" / "Ann"
    photos.mkdir(parents=True)
    result = CliRunner().invoke(
        main,
        [
            "init",
            str(tmp_path / "proj"),
            "--folder",
            str(tmp_path / "photos"),
            "--labeled",
            "--max-per-name",
            "5",
            "--models-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    root = tmp_path / "proj"
    assert (root / ".git").is_dir() and (root / ".dvc").is_dir()
    assert "analytics = false" in (root / ".dvc" / "config").read_text()
    assert (root / "dvc.yaml").read_text() == render_dvc_yaml(code_deps=False)
    p = params.load(root / "params.yaml")
    assert p["sources"]["folders"] == [{"root": str(tmp_path / "photos"), "labeled": True, "max_per_name": 5}]
    assert p["models"]["dir"] == str(tmp_path)
    for stage in ("ingest", "detect", "embed", "cluster", "validate", "export"):
        assert (root / "stages" / f"{stage}.py").is_file()
    assert (root / "stages" / "run.sh").read_text() == RUN_SH
    assert all(p in (root / ".dvcignore").read_text().splitlines() for p in DVCIGNORE)
    # DVC cannot see the installed facedata: each stage's code hash (and model) is a param in versions.yaml
    versions = yaml.safe_load((root / "versions.yaml").read_text())
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    for stage, spec in doc["stages"].items():
        assert versions[stage]["code"] == code_hash(stage)
        assert {"versions.yaml": [stage]} in spec["params"] and spec["cmd"] == f"sh stages/run.sh {stage}"
    assert versions["detect"]["model"].split()[0] in ("retinaface", "unavailable:")  # found, or why not
    again = CliRunner().invoke(main, ["init", str(root)])
    assert again.exit_code == 2 and "already holds" in again.output


def test_init_refuses_existing_project(tmp_path):
    init_project(tmp_path / "p", {"folders": [], "videos": []}, git=False)
    with pytest.raises(FileExistsError):
        init_project(tmp_path / "p", {"folders": [], "videos": []}, git=False)
