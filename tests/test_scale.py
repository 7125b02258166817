"""Scale-out on a real Dask cluster: a `LocalCluster` of 2 worker processes on 127.0.0.1, started here. Sharded
detect + embed build the same manifests as the local run; a worker killed mid-shard loses nothing (its shard
runs again); finished shards of a killed stage are read back, not redone; the cluster stage's large kNN search
runs through `knn_dask` with the same result."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from facedata import manifest
from facedata.pipeline.runner import run_stage
from facedata.scale.connect import ENV, ScaleError, check_address, dask_address
from facedata.scale.shards import checkpoint_dir

from .projects import SMALL_3D_REPORT, env, run_report, set_params

pytestmark = [pytest.mark.shared, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TABLES = ("detections", "faces", "embeddings")


def test_dask_address_comes_from_env_over_params_and_is_checked(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert dask_address({}) == ""
    assert dask_address({"execution": {"dask_address": "local:2"}}) == "local:2"
    monkeypatch.setenv(ENV, "tcp://127.0.0.1:8786")
    assert dask_address({"execution": {"dask_address": "local:2"}}) == "tcp://127.0.0.1:8786"
    for bad in ("local:0", "127.0.0.1:8786", "local:two"):
        with pytest.raises(ScaleError):
            check_address(bad)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as lc,
        Client(lc) as client,
    ):
        yield lc.scheduler_address, client


def _project(root: Path, src: Path, **execution) -> Path:
    root.mkdir(parents=True)
    params = {
        "sources": {"folders": [{"root": str(src), "labeled": True}], "videos": []},
        "detect": {"workers": 1, "batch_size": 2},
        "embed": {"workers": 1, "batch_size": 4},
        "execution": execution,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _stable(root: Path, name: str):
    return manifest.stable_view(manifest.read(name, root))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw):
    src = tmp_path_factory.mktemp("scale") / "photos"
    for name in ("Colin_Powell", "Meryl_Streep", "Hugo_Chavez"):
        (src / name).mkdir(parents=True)
        for p in sorted((lfw / name).glob("*.jpg"))[:4]:
            shutil.copy(p, src / name / p.name)
    (src / "Hugo_Chavez" / "broken.jpg").write_text("not an image")  # an error row on both paths
    return src


@pytest.fixture(scope="module")
def local_run(photos, tmp_path_factory):
    root = _project(tmp_path_factory.mktemp("local") / "proj", photos)
    for stage in ("ingest", "detect", "embed"):
        assert run_stage(stage, root) == 0, stage
    return root


def test_sharded_detect_and_embed_match_the_local_run(photos, local_run, cluster, tmp_path, monkeypatch):
    address, _ = cluster
    root = _project(tmp_path / "proj", photos, dask_address=address, shard_size=4)
    for stage in ("ingest", "detect", "embed"):
        assert run_stage(stage, root) == 0, stage
    for name in TABLES:
        assert _stable(root, name).equals(_stable(local_run, name)), name
    detect = run_report(root, "detect")
    assert detect["dask_workers"] == 2 and detect["workers"] == 2
    n = len(manifest.read("images", root))
    assert detect["shards"] == -(-n // 4) == detect["shards_done"] and detect["shards_failed"] == 0, detect
    assert (root / "data" / "reports" / "detect" / "dask.artifact.md").exists()
    assert not checkpoint_dir(root, "detect").exists(), "a finished stage leaves no checkpoints"
    _assert_dashboard_answers(detect["dashboard"])
    # metrics are results only: identical to the local run's
    for stage in ("detect", "embed"):
        ours, theirs = (
            json.loads((r / "data" / "metrics" / f"{stage}.json").read_text()) for r in (root, local_run)
        )
        assert ours == theirs, stage


def _assert_dashboard_answers(link: str) -> None:
    """The logged link is the scheduler's live dashboard (bokeh installed), served from 127.0.0.1 with its
    scripts: without bokeh the same URL answers 200 too, with a page that asks for bokeh."""
    from urllib.parse import urljoin
    from urllib.request import urlopen

    assert link and link.startswith("http://127.0.0.1:"), link
    with urlopen(link, timeout=30) as page:
        assert page.status == 200
        html = page.read().decode()
    assert "Dask Diagnostic UI" in html and "needs bokeh" not in html, html[:300]
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts and not any("//" in src for src in scripts), scripts  # nothing from a CDN
    with urlopen(urljoin(link, scripts[0]), timeout=30) as js:
        assert js.status == 200 and len(js.read()) > 10_000


def test_workers_keep_model_buffers_between_passes(photos, cluster, tmp_path):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_ set, which made glibc mmap and page-fault every
    large buffer afresh (2048 faults per 8 MiB): one worker used 2-2.5x the CPU of the in-process run. A sharded
    stage sets its workers up first, so buffers are reused (all but a few faults gone)."""

    def page_faults_per_buffer() -> tuple[float, str | None]:
        """On a worker: minor page faults per 8 MiB buffer allocated, filled and freed 16 times (what a conv
        net's activations do in each forward pass), and the glibc setting the nanny gave the worker."""
        import resource

        import numpy as np

        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(16):
            np.ones(1 << 20, dtype=np.float64)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 16
        return faults, os.environ.get("MALLOC_TRIM_THRESHOLD_")

    address, client = cluster
    root = _project(tmp_path / "proj", photos, dask_address=address, shard_size=4)
    for stage in ("ingest", "detect"):
        assert run_stage(stage, root) == 0, stage
    probes = client.run(page_faults_per_buffer)
    assert len(probes) == 2
    for worker, (faults, trim) in probes.items():
        assert trim == "65536", f"the nanny no longer sets MALLOC_TRIM_THRESHOLD_ ({trim}): revisit this test"
        assert faults < 64, f"{worker}: {faults} page faults per 8 MiB buffer"


def _processing(client) -> dict[str, list[str]]:
    return {w: [str(k) for k in keys] for w, keys in client.processing().items()}


def test_a_worker_killed_mid_shard_loses_nothing(photos, local_run, cluster, tmp_path):
    address, client = cluster
    root = _project(tmp_path / "proj", photos, shard_size=2)
    assert run_stage("ingest", root) == 0
    folder = checkpoint_dir(root, "detect")
    code = f"from facedata.pipeline.runner import run_stage; raise SystemExit(run_stage('detect', {str(root)!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**env(), ENV: address}, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        started = {m.name.split(".")[0] for m in folder.glob("*.start.*")} if folder.is_dir() else set()
        unfinished = [s for s in started if not (folder / f"{s}.done.json").exists()]
        for worker, keys in _processing(client).items():
            if any(s[:8] in k for s in unfinished for k in keys):
                pid = client.run(os.getpid, workers=[worker])[worker]
                os.kill(pid, signal.SIGKILL)
                killed = worker
                break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert killed, "no shard was caught mid-run to kill its worker"
    assert proc.returncode == 0, err
    report = run_report(root, "detect")
    assert report["shards_retried"] >= 1 and report["shards_failed"] == 0, report
    assert report["shards_done"] == report["shards"] == -(-len(manifest.read("images", root)) // 2), report
    for name in ("detections", "faces"):
        assert _stable(root, name).equals(_stable(local_run, name)), name
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed worker for the next tests


def test_finished_shards_of_a_killed_stage_are_reused(photos, local_run, cluster, tmp_path):
    """The driver dies (SIGKILL: no chance to write the manifests); its finished shards are on disk, and the
    rerun reads them back instead of computing them again."""
    address, _ = cluster
    root = _project(tmp_path / "proj", photos, dask_address=address, shard_size=2)
    assert run_stage("ingest", root) == 0
    folder = checkpoint_dir(root, "detect")
    code = f"from facedata.pipeline.runner import run_stage; run_stage('detect', {str(root)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.glob("*.done.json"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "detect finished before it could be killed"
    proc.kill()
    proc.wait()
    done_before = len(list(folder.glob("*.done.json")))
    assert run_stage("detect", root) == 0
    report = run_report(root, "detect")
    assert report["shards_reused"] >= done_before >= 2, report
    assert report["shards_reused"] + report["shards_done"] == report["shards"], report
    for name in ("detections", "faces"):
        assert _stable(root, name).equals(_stable(local_run, name)), name


def test_cluster_stage_knn_on_dask_is_the_local_graph(local_run, cluster, tmp_path, monkeypatch):
    """Above cluster.exact_knn_max faces with a cluster configured the kNN search runs through knn_dask (here
    the IVF search, exact_knn_max: 0); the clusters are the local search's."""
    address, _ = cluster
    root = tmp_path / "proj"
    shutil.copytree(local_run, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["cluster"] = {"exact_knn_max": 0, "incremental": False, "k": 5}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage("cluster", root) == 0
    assert run_report(root, "cluster")["knn"] == "local"
    local = _stable(root, "clusters")
    monkeypatch.setenv(ENV, address)
    assert run_stage("cluster", root) == 0
    assert run_report(root, "cluster")["knn"] == "dask"
    assert _stable(root, "clusters").equals(local)


def _meshes(root: Path):
    """The per-face mesh rows without their timings."""
    table = _stable(root, "meshes")
    return table.drop_columns(["seconds"]).filter(pc.equal(table["kind"], "face"))


def test_sharded_reconstruct3d_matches_the_local_run(cluster, tmp_path, monkeypatch):
    from .test_recon3d_stage import _make_project

    address, _ = cluster
    roots = {}
    for kind in ("local", "dask"):
        roots[kind] = root = tmp_path / kind
        _make_project(root)
        set_params(root, recon3d=SMALL_3D_REPORT)
        if kind == "dask":
            monkeypatch.setenv(ENV, address)
            set_params(root, execution={"shard_size": 4})
        assert run_stage("reconstruct3d", root) == 0, kind
    assert _meshes(roots["dask"]).equals(_meshes(roots["local"]))
    report = run_report(roots["dask"], "reconstruct3d")
    # shards are whole batches of the local run's (16 photos): these 7 photos are one shard
    assert report["shards"] == report["shards_done"] == 1 and report["dask_workers"] == 2, report
    for kind in ("local", "dask"):  # the renders come back wherever the faces were reconstructed
        assert list((roots[kind] / "data" / "reports" / "reconstruct3d").rglob("*.png")), kind


def test_an_unreachable_scheduler_is_a_clear_error():
    from facedata.scale.connect import connect

    from .conftest import free_port

    with (
        pytest.raises(ScaleError, match="cannot reach the Dask scheduler"),
        connect(f"tcp://127.0.0.1:{free_port()}", timeout=2),
    ):
        pass


def test_dask_local_n_starts_and_stops_its_own_cluster(photos, local_run, tmp_path):
    """`facedata stage detect --dask local:2`: a LocalCluster of 2 workers on 127.0.0.1 for the stage alone."""
    from .projects import BIN

    root = _project(tmp_path / "proj", photos, shard_size=4)
    assert run_stage("ingest", root) == 0
    e = {k: v for k, v in env().items() if k != ENV}
    done = subprocess.run(
        [str(BIN / "facedata"), "stage", "detect", "--root", str(root), "--dask", "local:2"],
        env=e,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on the Dask cluster at tcp://127.0.0.1:" in done.stderr
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", done.stderr), done.stderr[-3000:]
    report = run_report(root, "detect")
    assert report["dask_workers"] == 2 and report["shards_done"] == report["shards"] >= 2, report
    for name in ("detections", "faces"):
        assert _stable(root, name).equals(_stable(local_run, name)), name


LOADS: list[str] = []


def _count_load(name: str) -> str:
    LOADS.append(name)
    return f"model {name}"


def test_a_worker_keeps_each_stages_model_across_shards_and_stages():
    """One worker thread keeps detect's, embed's and reconstruct3d's models (KEEP_MODELS) while the same factory,
    arguments and model identity come back, so a cluster that outlives a stage loads each once; another model
    identity (e.g. replaced weights) is loaded anew, and the least recently used model goes first."""
    from facedata.models import ModelId
    from facedata.scale.shards import KEEP_MODELS, ShardJob, _state

    def job(name: str, sha: str = "a") -> ShardJob:
        return ShardJob("s", "/", _count_load, (name,), len, dict, None, "c", model=ModelId(name, "1", sha))

    LOADS.clear()
    for name in ("detect", "embed", "detect", "embed", "detect"):  # shards of a build's stages, in turn
        assert _state(job(name)) == f"model {name}"
    assert LOADS == ["detect", "embed"]
    _state(job("detect", sha="b"))  # new weights under the same name
    assert LOADS == ["detect", "embed", "detect"]
    assert KEEP_MODELS == 3
    _state(job("recon"))  # a fourth model: the least recently used one (embed's) goes
    _state(job("detect", sha="b"))
    _state(job("detect", sha="a"))
    assert LOADS == ["detect", "embed", "detect", "recon"]
    _state(job("embed"))
    assert LOADS == ["detect", "embed", "detect", "recon", "embed"]
