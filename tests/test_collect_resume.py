"""Kill-and-resume: a crawl killed midway (SIGKILL, no chance to clean up) and rerun fetches no finished URL
again and ends with every URL done once (issue 5)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facedata import manifest

from .collect_servers import LocalServer, fast_crawl_params, jpeg, send, write_project

REPO = Path(__file__).resolve().parents[1]
N = 40


def slow_image(seed: int, delay: float = 0.15):
    body = jpeg(seed)

    def route(req):
        time.sleep(delay)
        send(req, 200, body, "image/jpeg")

    return route


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _rows_on_disk(project: Path) -> list[dict]:
    path = manifest.path_for("crawl_log", project)
    if not path.exists():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except OSError:
        return []


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    with LocalServer("127.0.0.1") as server:
        for i in range(N):
            server.routes[f"/img/{i}.jpg"] = slow_image(i)
        project = tmp_path / "proj"
        write_project(
            project,
            {"crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{server.port}"], per_host_concurrency=2)},
        )
        urls = tmp_path / "urls.csv"
        urls.write_text(
            "url,name\n" + "".join(f"{server.url(f'/img/{i}.jpg')},Person {i % 3}\n" for i in range(N))
        )
        cmd = [sys.executable, "-m", "facedata.cli", "ingest-urls", str(urls), "--root", str(project)]
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(_rows_on_disk(project)) < 8 and proc.poll() is None:
                time.sleep(0.05)
            assert proc.poll() is None, (
                "the crawl finished before it could be killed: " + proc.stdout.read().decode()
            )
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        saved = [r for r in _rows_on_disk(project) if r["status"] == "stored"]
        assert 8 <= len(saved) < N
        hits_at_kill = {i: server.hits_of(f"/img/{i}.jpg") for i in range(N)}
        assert sum(hits_at_kill.values()) < N

        out = tmp_path / "report.json"
        done = subprocess.run(cmd + ["--json", str(out)], env=_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(out.read_text())
        assert report["stored"] == N and report["failed"] == 0 and len(report["urls"]) == N

        # finished URLs were not fetched again; the others were fetched at most once more
        for row in saved:
            i = int(row["source_uri"].rsplit("/", 1)[1].split(".")[0])
            assert server.hits_of(f"/img/{i}.jpg") == 1, row["source_uri"]
        for i in range(N):
            assert 1 <= server.hits_of(f"/img/{i}.jpg") <= 2
        assert sum(server.hits_of(f"/img/{i}.jpg") for i in range(N)) < N + 8

        # nothing lost, nothing torn: one row per URL, every stored blob matches its content hash
        log = manifest.read("crawl_log", project).to_pylist()
        assert len(log) == N and all(r["status"] == "stored" for r in log)
        assert {r["query_name"] for r in log} == {"Person 0", "Person 1", "Person 2"}
        images = manifest.read("images", project).to_pylist()
        assert len(images) == N
        for img in images:
            data = (project / img["store_path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == img["image_id"]

        # a third run has nothing left to fetch
        before = sum(server.hits_of(f"/img/{i}.jpg") for i in range(N))
        again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0
        assert sum(server.hits_of(f"/img/{i}.jpg") for i in range(N)) == before
