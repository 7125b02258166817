"""Code deps come from the import graph: the walker, the rendered dvc.yaml, the runtime code hash, and checks that
fail when a stage imports a file its deps do not list."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from facedata.lineage.codedeps import code_hash, files_hash, import_closure, package_dir, stage_code_files
from facedata.pipeline.dag import RUN_SH, STAGE_DEFS, stage_code_deps, stale_code_deps
from facedata.pipeline.scaffold import DVCIGNORE

from .conftest import REPO


def _package(root, files: dict[str, str]):
    base = root / "facedata"
    for rel, text in {"__init__.py": "", **files}.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def test_walker_follows_every_kind_of_import(tmp_path):
    base = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stage.py": (
                "from typing import TYPE_CHECKING\n"
                "from facedata import helpers\n"  # a submodule by `from package import module`
                "from facedata.tools import func\n"  # a name from a module: the module
                "from . import sibling\n"  # relative
                "if TYPE_CHECKING:\n    from facedata import typing_only\n"
                "def run():\n    import facedata.lazy.deep\n"  # inside a function: runs with the stage
            ),
            "pipeline/sibling.py": "from ..shared import x\n",
            "helpers.py": "",
            "tools.py": "def func(): pass\n",
            "typing_only.py": "",
            "lazy/__init__.py": "",
            "lazy/deep.py": "import os\nimport numpy\n",
            "shared.py": "x = 1\n",
            "unused.py": "",
        },
    )
    got = import_closure(["facedata.pipeline.stage"], base)
    assert set(got) == {
        f"facedata/{p}"
        for p in (
            "__init__.py",
            "pipeline/__init__.py",
            "pipeline/stage.py",
            "pipeline/sibling.py",
            "helpers.py",
            "tools.py",
            "lazy/__init__.py",
            "lazy/deep.py",
            "shared.py",
        )
    }


def test_repo_dvc_yaml_lists_exactly_what_each_stage_imports():
    assert stale_code_deps(REPO / "dvc.yaml") == {}
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for s in STAGE_DEFS:
        deps = [d for d in doc["stages"][s.name]["deps"] if d.startswith("src/")]
        assert deps == stage_code_deps(s.name)
    # the examples: validate runs the clustering metric, ingest runs ids and store; and since the library
    # never imports stage code (issue 15), validate no longer depends on the cluster stage's driver
    validate = doc["stages"]["validate"]["deps"]
    assert "src/facedata/cluster/metrics.py" in validate and "src/facedata/pipeline/cluster.py" not in validate
    ingest = doc["stages"]["ingest"]["deps"]
    assert "src/facedata/ids.py" in ingest and "src/facedata/store.py" in ingest


def test_a_stage_importing_an_unlisted_module_fails_the_check(tmp_path, monkeypatch):
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    doc["stages"]["detect"]["deps"].remove("src/facedata/faces/quality.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    assert stale_code_deps(tmp_path / "dvc.yaml") == {"detect": ["src/facedata/faces/quality.py"]}
    from facedata.cli import main

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["dvc-yaml", "--check"])
    assert res.exit_code == 1 and "detect: src/facedata/faces/quality.py" in res.output


@pytest.mark.parametrize("stage", [s.name for s in STAGE_DEFS])
def test_modules_a_stage_actually_loads_are_among_its_deps(stage):
    """What Python really imports for the stage (entry point, runner, stage module) is inside the static set."""
    code = (
        "import json, sys, importlib\n"
        "import facedata.pipeline.runner\n"
        f"importlib.import_module('facedata.pipeline.{stage}')\n"
        "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())"
        " if (n == 'facedata' or n.startswith('facedata.')) and getattr(m, '__file__', None))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = {
        str(__import__("pathlib").Path(f).resolve().relative_to(package_dir().parent)) for f in json.loads(out)
    }
    assert loaded <= set(stage_code_files(stage)), sorted(loaded - set(stage_code_files(stage)))


def test_code_hash_follows_the_files_a_stage_imports(tmp_path):
    copy = tmp_path / "facedata"
    shutil.copytree(package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    for stage in ("detect", "cluster"):
        assert files_hash(stage_code_files(stage, copy), tmp_path)[:16] == code_hash(stage)
    detect_py = copy / "faces" / "detect.py"
    detect_py.write_text(detect_py.read_text().replace("covered >= 0.6", "covered >= 0.61"))
    assert files_hash(stage_code_files("detect", copy), tmp_path)[:16] != code_hash("detect")
    assert files_hash(stage_code_files("cluster", copy), tmp_path)[:16] == code_hash("cluster")


def test_repo_launcher_and_dvcignore_are_current():
    assert (REPO / "stages" / "run.sh").read_text() == RUN_SH
    lines = (REPO / ".dvcignore").read_text().splitlines()
    assert all(p in lines for p in DVCIGNORE)


@pytest.mark.slow
def test_clean_clone_status_reports_no_spurious_code_change(tmp_path):
    """On a clean clone of this repository, `dvc status` reports a code dep as modified exactly when the file
    differs from what dvc.lock recorded, before and after Python leaves byte-code beside the sources."""
    import compileall
    import hashlib

    from .projects import BIN, run

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(REPO), str(clone)], tmp_path)

    def modified_code() -> set[str]:
        out = run([str(BIN / "dvc"), "status", "--json"], clone).stdout
        found = set()
        for changes in json.loads(out or "{}").values():
            for change in changes:
                if isinstance(change, dict):
                    deps = change.get("changed deps", {})
                    found |= {p for p, how in deps.items() if p.startswith(("src/", "stages/"))}
        return found

    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    stale = {
        d["path"]
        for stage in lock["stages"].values()
        for d in stage.get("deps", [])
        if d["path"].startswith(("src/", "stages/"))
        and hashlib.md5((clone / d["path"]).read_bytes()).hexdigest() != d.get("md5")
    }
    assert modified_code() == stale
    compileall.compile_dir(str(clone / "src"), quiet=1)
    compileall.compile_dir(str(clone / "stages"), quiet=1)
    assert any((clone / "src" / "facedata").rglob("*.pyc"))
    assert modified_code() == stale
