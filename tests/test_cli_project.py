"""Commands tell the truth about the project they run in: `params` and `models` read its params.yaml, one-off
outputs go to a stated folder, a mistyped stage is a usage error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from facedata.cli import main

from .conftest import SHARED
from .projects import env


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "proj"
    result = CliRunner().invoke(main, ["init", str(root), "--no-git"])
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("FACEDATA_PROJECT", raising=False)
    return root


def set_param(root: Path, section: str, key: str, value) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw.setdefault(section, {})[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


def test_params_shows_the_project_values_and_where_they_came_from(project):
    set_param(project, "cluster", "threshold", 0.5)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    del raw["cluster"]["k"]  # falls back to the default
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    out = CliRunner().invoke(main, ["params", "--root", str(project), "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["key"]: r for r in json.loads(out.stdout)["values"]}
    assert rows["cluster.threshold"]["value"] == 0.5 and rows["cluster.threshold"]["from"] == "yaml"
    assert rows["cluster.threshold"]["default"] == 0.31
    assert rows["cluster.k"]["from"] == "default" and rows["cluster.k"]["value"] == 20
    text = CliRunner().invoke(main, ["params", "--root", str(project)]).stdout
    line = next(x for x in text.splitlines() if x.startswith("cluster.threshold "))
    assert "0.5" in line and "yaml" in line and "(default 0.31)" in line


def test_params_outside_a_project_lists_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACEDATA_PROJECT", raising=False)
    rows = json.loads(CliRunner().invoke(main, ["params", "--json"]).stdout)["values"]
    assert {r["from"] for r in rows} == {"default"}


def test_a_mistyped_stage_is_a_usage_error_and_runs_nothing(project):
    out = subprocess.run(
        [str(Path(sys.executable).parent / "facedata"), "build", "--stage", "clustr", "--root", str(project)],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert out.returncode == 2, out.stderr
    assert "unknown stage(s) clustr (did you mean `cluster`?)" in out.stderr
    assert "stages: check, ingest, detect, embed, cluster" in out.stderr
    assert "Traceback" not in out.stderr and "flow run" not in out.stderr.lower()
    assert not (project / "data" / "reports" / "runs").exists()


@pytest.mark.shared
def test_models_inside_a_project_searches_its_models_dir(project, shared):
    set_param(project, "models", "dir", str(SHARED / "models"))
    environ = {k: v for k, v in env().items() if k != "FACEDATA_MODELS_DIR"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "facedata"), "models", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**environ, "XDG_CACHE_HOME": str(project / "cache")},  # an empty user cache
    )
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["dlib-resnet"]["models_dir"] == str(SHARED / "models")
    assert "models.dir of" in rows["dlib-resnet"]["models_dir_from"]
    for name in ("retinaface", "dlib-resnet", "3ddfa-v2-mb05", "sfm-3448"):
        assert rows[name]["available"], rows[name]
        assert rows[name]["used_by_project"]
        assert str(SHARED / "models") in rows[name]["files"][0]


def test_face3d_writes_under_the_project_data_folder_by_default(project, tmp_path, monkeypatch):
    from facedata.cli.face3d import default_out

    monkeypatch.chdir(project / "data")
    assert default_out(None) == project.resolve() / "data" / "face3d"
    assert "/data/*" in (project / ".gitignore").read_text()  # git ignores it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_out(None) == Path("face3d_out")
    help_text = CliRunner().invoke(main, ["face3d", "--help"]).output
    assert "data/face3d" in help_text and "face3d_out outside one" in help_text
