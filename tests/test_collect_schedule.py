"""`facedata schedule --cron`: against a real local Prefect server, the deployment is created with its cron
schedule, the server's scheduler creates scheduled runs, and a scheduled run executes the crawl (issue 5).

The earliest scheduled run (tomorrow 03:00) is moved to now rather than waiting for it; it is still the run
the scheduler created from the cron schedule, executed by the served deployment."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from facedata import manifest

from .collect_servers import CONTACT, LocalServer, jpeg, static, write_project

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, api: str | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", ""),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        DVC_NO_ANALYTICS="1",
    )
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait(check, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_schedule_creates_a_deployment_whose_scheduled_run_crawls(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Scheduled

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=_env(tmp_path),
        stdout=server_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    schedule = None
    try:
        with LocalServer("127.0.0.1") as web:
            for i in range(3):
                web.routes[f"/{i}.jpg"] = static(jpeg(900 + i))
            project = tmp_path / "proj"
            init = subprocess.run(
                [sys.executable, "-m", "facedata.cli", "init", str(project)],
                env=_env(tmp_path),
                capture_output=True,
                text=True,
            )
            assert init.returncode == 0, init.stderr
            (project / "urls.txt").write_text("".join(web.url(f"/{i}.jpg") + "\n" for i in range(3)))
            params = yaml.safe_load((project / "params.yaml").read_text())
            params["sources"]["url_lists"] = [{"path": "urls.txt", "name": "Scheduled Person"}]
            params["crawl"].update(allow_hosts=[f"127.0.0.1:{web.port}"], per_host_interval_s=0.0, contact=CONTACT)
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

            def healthy():
                try:
                    with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                        return r.status == 200
                except OSError:
                    return False

            _wait(healthy, 120, "the Prefect server")
            schedule = subprocess.Popen(
                [sys.executable, "-m", "facedata.cli", "schedule", "--cron", "0 3 * * *", "--stage", "ingest"],
                cwd=project,
                env=_env(tmp_path, api),
                stdout=open(tmp_path / "schedule.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                deployment = _wait(lambda: next(iter(client.read_deployments()), None), 90, "the deployment")
                assert deployment.name == "facedata-scheduled-build"
                assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
                assert deployment.parameters["root"] == str(project.resolve())
                assert deployment.parameters["recrawl"] is True

                def scheduled_runs():
                    return client.read_flow_runs(
                        deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}),
                        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    )

                runs = _wait(scheduled_runs, 60, "runs created by the scheduler")
                run = runs[0]
                assert run.auto_scheduled and run.state_type.value == "SCHEDULED"
                assert run.expected_start_time.hour == 3 and run.expected_start_time.minute == 0
                client.set_flow_run_state(run.id, Scheduled(scheduled_time=dt.datetime.now(dt.UTC)), force=True)
                final = _wait(
                    lambda: (r := client.read_flow_run(run.id)).state.is_final() and r,
                    180,
                    "the scheduled run",
                    1.0,
                )
                assert final.state_type.value == "COMPLETED", (tmp_path / "schedule.log").read_text()[-3000:]
                keys = {a.key for a in client.read_artifacts() if a.flow_run_id == run.id}
                assert {"facedata-crawl", "facedata-ingest"} <= keys
            log = manifest.read("crawl_log", project).to_pylist()
            assert len(log) == 3 and all(r["status"] == "stored" for r in log)
            assert all(web.hits_of(f"/{i}.jpg") == 1 for i in range(3))
    finally:
        if schedule is not None:
            _stop(schedule)
        _stop(server)
        server_log.close()


def test_schedule_needs_a_server_and_a_valid_cron(tmp_path):
    from click.testing import CliRunner

    from facedata.cli import main as cli

    write_project(tmp_path, {})
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["schedule", "--cron", "not cron", "--root", str(tmp_path)],
        env={"PREFECT_API_URL": "http://127.0.0.1:9/api"},
    )
    assert result.exit_code == 2 and "cron" in result.output
