"""`facedata ui`: a local Prefect server to watch builds in, started once and found afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

HOST = "127.0.0.1"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at `api_url` (…/api)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def _home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value())


def start_server(port: int, timeout: float) -> tuple[int, Path]:
    """`prefect server start` on 127.0.0.1:`port`, detached (it outlives this command); (pid, log file)."""
    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"facedata-ui-{port}.log"
    env = {
        **os.environ,
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",  # the UI's pages call this (default :4200)
    }
    prefect = Path(sys.executable).parent / "prefect"
    cmd = [str(prefect) if prefect.exists() else "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (home / f"facedata-ui-{port}.pid").write_text(str(proc.pid))
    api = f"http://{HOST}:{port}/api"
    deadline = time.monotonic() + timeout
    while not healthy(api):
        if proc.poll() is not None:
            raise click.ClickException(f"the Prefect server exited (code {proc.returncode}); its log: {log}")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the Prefect server did not answer within {timeout:.0f} s; its log: {log}")
        time.sleep(0.5)
    return proc.pid, log


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=4200, show_default=True, help="port on 127.0.0.1")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="seconds to wait for start-up",
)
@click.option("--stop", is_flag=True, help="stop the server `facedata ui` started on this port")
def ui(port, timeout, stop) -> None:
    """Start (or find) a local Prefect server on 127.0.0.1 to watch builds in; print its URL and the
    PREFECT_API_URL to export so that `facedata build` reports to it.

    The server runs on after this command returns (its log and pid are in PREFECT_HOME); `facedata ui --stop`
    stops it. It listens on 127.0.0.1 only.

    \b
    Exit code 0 when a server answers, 1 when it could not be started, 2 when the port is held by something else.
    """
    api = f"http://{HOST}:{port}/api"
    if stop:
        pid_file = _home() / f"facedata-ui-{port}.pid"
        if not pid_file.exists():
            click.echo(f"no server started by `facedata ui` on port {port}", err=True)
            sys.exit(1)
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)
        click.echo(f"stopped the Prefect server on port {port}")
        return
    if healthy(api):
        click.echo(f"found a Prefect server at http://{HOST}:{port}", err=True)
    elif port_taken(port):
        click.secho(
            f"error: port {port} on {HOST} is in use by something that is not a Prefect server; "
            "pass --port with a free port",
            fg="red",
            err=True,
        )
        sys.exit(2)
    else:
        click.echo(f"starting a Prefect server on http://{HOST}:{port} ...", err=True)
        try:
            pid, log = start_server(port, timeout)
        except click.ClickException as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(1)
        click.echo(f"started (pid {pid}, log {log}); stop it with `facedata ui --stop --port {port}`", err=True)
    click.echo(f"Prefect UI: http://{HOST}:{port}")
    click.echo(f"export PREFECT_API_URL={api}")


COMMANDS = [ui]
