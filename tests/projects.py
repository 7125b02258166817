"""Helpers for tests that build real facedata projects (git + DVC) in temporary directories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from facedata.pipeline.scaffold import init_project

BIN = Path(sys.executable).parent

# 4 LFW identities x 4 images: enough for clusters, splits and gates, small enough for CI.
SAMPLE_NAMES = ["Bill_Clinton", "Colin_Powell", "Hugo_Chavez", "Winona_Ryder"]

# The 3D stage's run report at its smallest that still draws each kind of picture (one face's overlay and
# landmarks, a two-frame turntable): perf-only params (no result depends on them), and the default report
# (6 faces, 24 frames) tripled the stage's CPU time in every build of these projects. The report at full
# size is tests/test_recon3d_stage.py's to check.
SMALL_3D_REPORT = {"renders": 1, "turntable_frames": 2}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(
        {
            "GIT_AUTHOR_NAME": "facedata tests",
            "GIT_AUTHOR_EMAIL": "tests@facedata.invalid",
            "GIT_COMMITTER_NAME": "facedata tests",
            "GIT_COMMITTER_EMAIL": "tests@facedata.invalid",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return e


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd, check=check)


def run_report(root: Path, stage: str) -> dict:
    """The stage's last run report (rows reused, workers, seconds...): `data/reports/runs/<stage>.json`."""
    import json

    from facedata.pipeline.runner import run_report_path

    return json.loads(run_report_path(root, stage).read_text())


def set_params(root: Path, **sections) -> None:
    """Update params.yaml sections (dicts are merged one level deep)."""
    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message, "--allow-empty"], root)


def make_project(
    root: Path, lfw: Path, names=SAMPLE_NAMES, per_name: int = 4, extra_folders=(), videos=(), **params
) -> Path:
    """A committed git + DVC project over a small LFW sample (read in place from ../shared), with the 3D
    stage's report kept small (`SMALL_3D_REPORT`) unless `recon3d` says otherwise."""
    folders = [{"root": str(lfw), "labeled": True, "names": list(names), "max_per_name": per_name}, *extra_folders]
    init_project(root, {"folders": folders, "videos": list(videos)})
    set_params(root, **{"recon3d": SMALL_3D_REPORT, **params})
    commit(root, "facedata project")
    return root


def copy_project(src: Path, dst: Path) -> Path:
    """A full copy of a project (git history, DVC cache and outputs): a test that changes a shared build works
    on its own copy. Timestamps are kept, so DVC's status is the same in the copy."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def kill_once_written(
    cmd: list[str],
    path: Path,
    cwd: Path | None = None,
    extra_env: dict | None = None,
    settle: float = 0.0,
    timeout: float = 300,
) -> None:
    """Start `cmd` with checkpoints on every batch, wait until it has written `path` (and `settle` seconds
    more), then SIGKILL it: a stage killed mid-run, for resume tests. Fails if the run ended on its own first."""
    import pytest

    e = {**env(), "FACEDATA_CHECKPOINT_SECONDS": "0", **(extra_env or {})}
    proc = subprocess.Popen(cmd, cwd=cwd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(settle)
    if proc.poll() is not None:
        proc.wait()
        pytest.fail(f"{cmd[-1]} finished before it could be killed; give it more work")
    proc.kill()
    proc.wait()
