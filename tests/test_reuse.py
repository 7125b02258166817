"""Honest reuse in a real git + DVC project made by `facedata init` (the installed facedata, which DVC cannot
see): a row is reused only when the params, the stage's code and its model are what made it.

- nothing changed: forced reruns reuse every row and rewrite identical manifests and metrics;
- facedata upgraded (here: a copy of the package whose detection code differs, first on PYTHONPATH):
  `facedata build` sees the new code version, DVC reruns detect, and detect recomputes every row;
- a different ONNX file under the same `embed.model: onnx:rec.onnx` name: embed reruns and re-embeds.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from facedata import manifest
from facedata.lineage.codedeps import files_hash, package_dir, stage_code_files
from facedata.pipeline.dag import VERSIONS

from .projects import BIN, commit, copy_project, dvc, run, run_report, set_params

pytestmark = [pytest.mark.slow, pytest.mark.shared]

STAGES = ("ingest", "detect", "embed")


def build(root, api, *stages, env=None):
    """`facedata build` in a subprocess, reporting to the session's Prefect server (no temporary one each)."""
    args = [str(BIN / "facedata"), "build"] + [a for s in stages for a in ("--stage", s)]
    return run(args, root, extra_env={"PREFECT_API_URL": api, **(env or {})})


@pytest.fixture(scope="module")
def api(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def versions(root) -> dict:
    return yaml.safe_load((root / VERSIONS).read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_build):
    """A copy of the session's small build (Colin_Powell and Hugo_Chavez, 3 photos each), committed."""
    root = copy_project(small_build, tmp_path_factory.mktemp("reuse") / "proj")
    commit(root, "built")
    return root


def _bytes(root):
    return {n: manifest.path_for(n, root).read_bytes() for n in ("images", "detections", "faces", "embeddings")}


def test_nothing_changed_everything_is_reused(project):
    before = _bytes(project)
    metrics = {s: (project / "data" / "metrics" / f"{s}.json").read_bytes() for s in STAGES}
    for stage in STAGES:
        dvc("repro", "--force", "--single-item", stage, cwd=project)
    n_items = len(manifest.read("crawl_log", project))  # 6 stored, the rest skipped past max_per_name
    assert run_report(project, "ingest")["n_reused"] == n_items
    assert run_report(project, "detect")["n_processed"] == 0 and run_report(project, "detect")["n_reused"] == 6
    assert run_report(project, "embed")["n_embedded"] == 0
    assert _bytes(project) == before  # rows reused as they were, lineage included
    assert {s: (project / "data" / "metrics" / f"{s}.json").read_bytes() for s in STAGES} == metrics
    assert run(["git", "status", "--porcelain"], project).stdout == ""


def test_upgraded_detection_code_recomputes_detect_rows(project, api, tmp_path):
    pkg = tmp_path / "site"
    shutil.copytree(package_dir(), pkg / "facedata", ignore=shutil.ignore_patterns("__pycache__"))
    detect_py = pkg / "facedata" / "faces" / "detect.py"
    detect_py.write_text(detect_py.read_text().replace("covered >= 0.6)", "covered >= 0.61)"))
    upgraded = {"PYTHONPATH": str(pkg)}
    new_hash = files_hash(stage_code_files("detect", pkg / "facedata"), pkg)[:16]
    old_hash = versions(project)["detect"]["code"]
    assert new_hash != old_hash

    build(project, api, *STAGES, env=upgraded)
    assert versions(project)["detect"]["code"] == new_hash
    report = run_report(project, "detect")
    assert report["code_hash"] == new_hash and report["n_processed"] == 6 and report["n_reused"] == 0
    for name in ("detections", "faces"):
        assert {r["lineage"]["code_hash"] for r in manifest.read(name, project).to_pylist()} == {new_hash}
    assert "Data and pipelines are up to date" in dvc("status", "embed", cwd=project).stdout


def test_a_replaced_onnx_file_under_the_same_name_is_re_embedded(project, api):
    from .test_faces_embed import _export_onnx

    _export_onnx(project / "rec.onnx", seed=0)
    set_params(project, embed={"model": "onnx:rec.onnx", "flip": False})
    build(project, api, "embed")
    first = manifest.read("embeddings", project).to_pylist()
    sha = {r["lineage"]["model_sha256"] for r in first}
    assert run_report(project, "embed")["n_embedded"] == len(first) and len(sha) == 1
    _export_onnx(project / "rec.onnx", seed=1)  # another model, same file name, same params
    build(project, api, "embed")
    assert run_report(project, "embed")["n_embedded"] == len(first)
    second = manifest.read("embeddings", project).to_pylist()
    assert {r["lineage"]["model_sha256"] for r in second}.isdisjoint(sha)
    assert {r["model_version"] for r in second} != {r["model_version"] for r in first}
    assert "Data and pipelines are up to date" in dvc("status", "embed", cwd=project).stdout
