"""`facedata ui`: starts a real Prefect server on 127.0.0.1 (and finds it the second time), prints the URL and
the PREFECT_API_URL to export; refuses a port held by something else; `--stop` stops what it started."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest

from .conftest import free_port
from .projects import BIN, run

pytestmark = pytest.mark.slow


def test_ui_starts_then_finds_a_local_prefect_server(tmp_path):
    port = free_port()
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}
    api = f"http://127.0.0.1:{port}/api"
    try:
        first = run([str(BIN / "facedata"), "ui", "--port", str(port)], tmp_path, extra_env=env)
        assert "starting a Prefect server" in first.stderr and "started (pid" in first.stderr
        assert first.stdout.splitlines() == [
            f"Prefect UI: http://127.0.0.1:{port}",
            f"export PREFECT_API_URL={api}",
        ]
        with urllib.request.urlopen(f"{api}/health", timeout=10) as resp:
            assert resp.status == 200
        # It listens on 127.0.0.1 only, so the host's other addresses do not reach it.
        assert (tmp_path / "prefect" / f"facedata-ui-{port}.log").exists()
        second = run([str(BIN / "facedata"), "ui", "--port", str(port)], tmp_path, extra_env=env)
        assert "found a Prefect server" in second.stderr and "starting" not in second.stderr
        assert second.stdout == first.stdout
    finally:
        stopped = run(
            [str(BIN / "facedata"), "ui", "--port", str(port), "--stop"], tmp_path, extra_env=env, check=False
        )
    assert stopped.returncode == 0 and "stopped" in stopped.stdout


def test_ui_refuses_a_port_held_by_something_else(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run(
            [str(BIN / "facedata"), "ui", "--port", str(port), "--timeout", "5"],
            tmp_path,
            extra_env={"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""},
            check=False,
        )
    assert out.returncode == 2 and "not a Prefect server" in out.stderr
    assert not os.path.exists(tmp_path / "prefect" / f"facedata-ui-{port}.pid")
