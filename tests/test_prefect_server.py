"""With PREFECT_API_URL set, `facedata build` runs appear in a real Prefect server (API and UI)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from .projects import BIN, SAMPLE_NAMES, make_project, run

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body or {}).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_build_shows_in_the_prefect_server(prefect_server, tmp_path, lfw, monkeypatch):
    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES[:2], per_name=2)
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    out = run([str(BIN / "facedata"), "build"], root)
    assert "facedata outputs" in out.stdout
    assert "temporary server" not in out.stdout + out.stderr  # it used the configured server

    runs = api(prefect_server, "/flow_runs/filter", {"flows": {"name": {"any_": ["facedata-build"]}}})
    assert len(runs) == 1 and runs[0]["state"]["type"] == "COMPLETED"
    tasks = api(prefect_server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [runs[0]["id"]]}}})
    assert sorted(t["name"] for t in tasks) == sorted(
        ["ingest", "detect", "embed", "cluster", "validate", "export"]
    )
    arts = api(prefect_server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["facedata-build"]}}})
    assert arts and "facedata stage `export`" in arts[0]["data"]

    ui = prefect_server.removesuffix("/api")
    with urllib.request.urlopen(ui, timeout=30) as resp:
        page = resp.read().decode()
    assert resp.status == 200 and "<html" in page.lower()
