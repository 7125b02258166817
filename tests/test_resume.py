"""A stage killed halfway keeps what it finished; the rerun processes only the rest and duplicates nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from facedata import manifest

from .projects import SAMPLE_NAMES, env, kill_once_written, make_project

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def test_detect_killed_midway_resumes(tmp_path, lfw):
    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES, per_name=6, detect={"batch_size": 2})
    subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=root, env=env(), check=True, capture_output=True)
    n_images = manifest.read("images", root).num_rows
    assert n_images == 24

    kill_once_written(
        [sys.executable, "-m", "stages.detect"], manifest.path_for("detections", root), root, settle=0.5
    )

    done = manifest.read("detections", root).num_rows  # the checkpoint is a complete, readable manifest
    assert 0 < done < n_images
    faces_before = {r["face_id"] for r in manifest.read("faces", root).to_pylist()}

    out = subprocess.run(
        [sys.executable, "-m", "stages.detect"], cwd=root, env=env(), check=True, capture_output=True, text=True
    )
    assert f"n_reused={done}" in out.stderr and f"n_processed={n_images - done}" in out.stderr
    dets = manifest.read("detections", root)
    assert dets.num_rows == n_images and not manifest.duplicate_keys("detections", dets)
    faces = {r["face_id"] for r in manifest.read("faces", root).to_pylist()}
    assert faces_before <= faces
    assert os.path.getsize(manifest.path_for("faces", root)) > 0
