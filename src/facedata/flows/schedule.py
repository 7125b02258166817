"""Scheduled crawls: a Prefect deployment of the build flow that re-crawls (forces `ingest`) and rebuilds.

`facedata schedule --cron "0 3 * * *"` registers the deployment on the Prefect server named by
PREFECT_API_URL and then serves it: the process stays up and runs each scheduled flow run (Prefect's
`serve`; keep it running under systemd, tmux, a container...). The runs, their logs, and the artifacts
(`facedata-crawl`: per-source counts and failure reasons; one per stage) show in the Prefect UI.

The flow is referenced by module path (`facedata.flows.build.build_flow`), so it loads wherever facedata is
installed; the project directory is a parameter of the deployment.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_NAME = "facedata-scheduled-build"


class ScheduleError(RuntimeError):
    pass


def check_cron(cron: str) -> None:
    """Refuse a malformed cron expression with a readable message (before anything is registered)."""
    from prefect._internal.schemas.validators import validate_cron_string

    try:
        validate_cron_string(cron)
    except ValueError as exc:
        raise ScheduleError(
            f"not a valid cron expression: {cron!r} ({exc}); e.g. '0 3 * * *' is 03:00 every day"
        ) from None


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not url:
        raise ScheduleError(
            "a schedule needs a Prefect server that stays up: start one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (or your server's address)"
        )
    return url


def make_deployment(
    root: str | Path,
    cron: str,
    name: str = DEFAULT_NAME,
    stages: list[str] | None = None,
    timezone: str | None = None,
    recrawl: bool = True,
):
    """The RunnerDeployment: build_flow(root, stages, recrawl) on a cron schedule."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from facedata.flows.build import build_flow

    check_cron(cron)
    return build_flow.to_deployment(
        name=name,
        schedule=Cron(cron, timezone=timezone),
        parameters={"root": str(Path(root).resolve()), "stages": stages or None, "recrawl": recrawl},
        description=f"facedata: re-crawl and rebuild {Path(root).resolve()} on '{cron}'",
        tags=["facedata", "crawl"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_schedule(deployment, limit: int = 1) -> None:
    """Register and serve until interrupted; at most `limit` builds at once (DVC allows one per project)."""
    from prefect import serve

    serve(deployment, limit=limit, print_starting_message=True)
