"""Shared test setup: the real data in ../shared, models resolved from ../shared/models, everything offline."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared")).resolve()
HAVE_SHARED = (SHARED / "data").is_dir() and (SHARED / "models").is_dir()
LFW = SHARED / "data" / "faces" / "lfw"
VIDEO = SHARED / "data" / "video"

# Models come from ../shared/models (or the installed packages); never from the network.
if HAVE_SHARED:
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
os.environ["FACEDATA_OFFLINE"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason=f"real data not found at {SHARED} (../shared is absent)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared" in item.keywords and not HAVE_SHARED:
            item.add_marker(needs_shared)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not HAVE_SHARED:
        pytest.skip(f"real data not found at {SHARED} (../shared is absent)")
    return SHARED


@pytest.fixture(scope="session")
def lfw(shared) -> Path:
    return LFW


@pytest.fixture(scope="session")
def small_build_run(tmp_path_factory, lfw, prefect_harness):
    """One small real project (2 people x 3 photos, batches of 2), committed, then built by the Prefect build
    flow (`facedata build`'s: one task per DVC stage; outputs not committed); yields (root, the flow's final
    state). test_flow checks this build; test_faults, test_reuse and test_flow copy the project
    (`projects.copy_project`) instead of each building the same one from scratch: copies, never this one."""
    from facedata.flows.build import build_flow

    from .projects import SAMPLE_NAMES, make_project

    # Two people whose first three photos cluster at any cut from 0.30 to 0.32 (Bill Clinton's sit 0.31-0.36
    # apart: a sample on the edge of the threshold would test the clustering defaults, not the pipeline).
    root = make_project(
        tmp_path_factory.mktemp("small") / "proj",
        lfw,
        names=SAMPLE_NAMES[1:3],
        per_name=3,
        detect={"batch_size": 2},
        embed={"batch_size": 2},
    )
    return root, build_flow(root=str(root), return_state=True)


@pytest.fixture(scope="session")
def small_build(small_build_run) -> Path:
    """The root of `small_build_run`'s project, built."""
    root, state = small_build_run
    assert state.is_completed(), state.message
    return root


@pytest.fixture(scope="session")
def prefect_harness(prefect_server):
    """Flows run in this process report to the session's one real Prefect server (`prefect_server`), as
    `prefect.testing.utilities.prefect_test_harness` does with a server of its own: one server start per
    session, not two, and one server's background services on the CPUs while the suite runs."""
    import inspect

    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server}),
        # as the harness does: code running in a context copied earlier sees the same server
        prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()),
    ):
        yield

        async def drain() -> None:  # the harness's teardown: logs and events reach the server before it stops
            try:
                result = APILogWorker.instance().drain()
                if inspect.isawaitable(result):
                    await result
            except RuntimeError:  # the log worker never started
                pass
            result = EventsWorker.drain_all()
            if inspect.isawaitable(result):
                await result

        run_coro_as_sync(drain())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1 with its own database; yields its API URL."""
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",  # else the UI's pages call :4200
    }
    cmd = [
        str(Path(sys.executable).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}/api"
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(url, proc, home / "server.log")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_healthy(url: str, proc, log_path: Path, timeout: float = 120.0) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"prefect server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)


def fixed_lineage(stage: str) -> dict:
    """A complete lineage struct for tests that call library functions without a project."""
    return {
        "stage": stage,
        "run_id": "r",
        "git_rev": "g",
        "code_version": "0",
        "params_hash": "p",
        "model_name": None,
        "model_version": None,
        "created_at": dt.datetime.now(dt.UTC),
    }


@pytest.fixture(scope="session")
def test_artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots): $FACEDATA_TEST_ARTIFACTS, else
    test-artifacts/ in the repository (ignored by git)."""
    folder = Path(os.environ.get("FACEDATA_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
