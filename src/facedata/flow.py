"""The Prefect build flow: one task per DVC stage, `dvc repro --single-item <stage>`, in DAG order.

DVC decides whether a stage is stale and caches its outputs; Prefect runs, retries, logs and shows. Each task
streams the stage's output into its log, publishes the stage's metrics as a markdown artifact, and fails with
the stage's own message. A quality-gate failure and a stage that cannot run (bad params, a corrupt manifest, a
missing model) are final; anything else (a crash, DVC's lock held by another run) is retried once. The flow
checks params.yaml before the first stage and holds the project lock (`facedata.lock`) for the whole build;
its stages inherit it. Interrupted (Ctrl-C, SIGTERM), it stops the running stage's process group before it
lets go. With no `PREFECT_API_URL`, Prefect runs the flow on a temporary local server; with one set, the runs
show in that server's UI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from facedata.lineage import RUN_ID_ENV  # noqa: E402
from facedata.lock import project_lock  # noqa: E402
from facedata.params import ParamsError  # noqa: E402
from facedata.pipeline.dag import read_dag, refresh_versions  # noqa: E402
from facedata.pipeline.runner import GATE_MARK, SETUP_MARK, run_report_path  # noqa: E402

GATE_EXIT = 1  # facedata.pipeline.runner: the stage ran and a check failed
STOP_GRACE_S = 20.0  # an interrupted stage gets this long to checkpoint before it is killed


class StageGateFailed(RuntimeError):
    """The stage ran and refused its inputs (a quality gate): retrying cannot help."""


class StageSetupError(RuntimeError):
    """The stage cannot run until someone fixes its setup (params, a manifest, a model): no retry."""


class StageCrashed(RuntimeError):
    """The stage did not complete (an error, a lock held by another run): worth a retry."""


def _retry_unless_gate(task, task_run, state) -> bool:
    return not isinstance(getattr(state, "data", None), StageGateFailed | StageSetupError)


def stage_env() -> dict[str, str]:
    """The environment stages run in: this interpreter's bin first, so `python -m stages.x` in dvc.yaml and
    `dvc` itself resolve to the environment facedata is installed in."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def dvc_executable() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def metrics_markdown(stage: str, metrics: dict) -> str:
    rows = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, list):
            rows.append((prefix, ", ".join(map(str, value)) or "(none)"))
        else:
            rows.append((prefix, f"{value:.4g}" if isinstance(value, float) else str(value)))

    walk("", metrics)
    lines = [f"### facedata stage `{stage}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def run_markdown(run: dict) -> str:
    """The stage's last run report (rows reused, workers, seconds...) under its metrics."""
    return "\n".join(["#### this run", "", *(f"- {k}: {v}" for k, v in run.items() if k != "stage")])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def default_remote(root: str | Path) -> str | None:
    """The project's default DVC remote (`dvc remote add -d`), or None."""
    proc = subprocess.run(
        [dvc_executable(), "remote", "default"], cwd=root, env=stage_env(), capture_output=True, text=True
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def push_outputs(root: str | Path) -> str:
    """`dvc push` every stage's cached outputs to the default remote; returns DVC's summary line."""
    proc = subprocess.run([dvc_executable(), "push"], cwd=root, env=stage_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc push failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return (proc.stdout.strip().splitlines() or ["pushed"])[-1]


def report_artifacts(root: str | Path, stage: str) -> list[Path]:
    """Pages a stage left for the run's observers: `data/reports/<stage>/*.artifact.md` (e.g. the 3D stage's
    renders), published as markdown artifacts after the stage ran."""
    folder = Path(root) / "data" / "reports" / stage
    return sorted(folder.glob("*.artifact.md")) if folder.is_dir() else []


def publish_report_artifacts(root: str | Path, stage: str) -> int:
    pages = report_artifacts(root, stage)
    for page in pages:
        name = page.name.removesuffix(".artifact.md")
        key = "facedata-" + "".join(c if c.isalnum() else "-" for c in f"{stage}-{name}".lower())
        create_markdown_artifact(markdown=page.read_text(encoding="utf-8"), key=key, description=f"{stage} report")
    return len(pages)


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_unless_gate,
)
def run_stage_task(stage: str, root: str, force: bool = False) -> dict:
    logger = get_run_logger()
    cmd = [dvc_executable(), "repro", "--single-item", stage] + (["--force"] if force else [])
    env = stage_env()
    env[RUN_ID_ENV] = str(flow_run.get_id() or env.get(RUN_ID_ENV, ""))
    logger.info("$ %s", " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    # Its own process group, so an interrupted build stops DVC and the stage it runs, never leaving them behind.
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    logger.info(part)
                    tail.append(part)
        rc = proc.wait()
    except BaseException:
        stop_process_group(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    metrics = _read_json(Path(root) / "data" / "metrics" / f"{stage}.json")
    run = _read_json(run_report_path(root, stage))
    if metrics:
        create_markdown_artifact(
            markdown=metrics_markdown(stage, metrics) + ("\n\n" + run_markdown(run) if run else ""),
            key=f"facedata-{stage}",
            description=f"metrics of stage {stage}",
        )
    if stage == "ingest" and metrics.get("per_source") is not None:
        from facedata.pipeline.ingest import crawl_report_markdown

        create_markdown_artifact(
            markdown=crawl_report_markdown(metrics, run),
            key="facedata-crawl",
            description="crawl: per-source counts and failure reasons",
        )
    publish_report_artifacts(root, stage)
    if rc != 0:
        message = "\n".join(tail)
        if f"facedata {stage}: {GATE_MARK}" in message or metrics.get("ok") is False:
            exc: type[RuntimeError] = StageGateFailed
        elif f"facedata {stage}: {SETUP_MARK}" in message:
            exc = StageSetupError
        else:
            exc = StageCrashed
        raise exc(f"stage {stage} failed (dvc exit code {rc}):\n{message}")
    return metrics


def stop_process_group(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to the process group `proc` leads (DVC and its stage: the stage checkpoints and exits), then
    SIGKILL to what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            # The group may outlive its leader for a moment (the stage checkpointing): wait for it too.
            deadline = time.monotonic() + wait
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _group_alive(proc.pid):
                break
        except subprocess.TimeoutExpired:
            continue


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting for a reaper do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


@flow(name="facedata-build", log_prints=True)
def build_flow(
    root: str = ".",
    stages: list[str] | None = None,
    force: bool = False,
    recrawl: bool = False,
    wait: float = 0.0,
) -> dict:
    """Run the project's DVC stages in DAG order (all of them, or the named ones, after `check`), one Prefect
    task each, holding the project lock (waiting up to `wait` seconds for another writer).

    `recrawl` forces the ingest stage (web sources are not DVC deps, so DVC alone never re-crawls); later
    stages then rerun only if what ingest produced changed. Scheduled builds (`facedata schedule`) set it."""
    from facedata.pipeline.check import check_project
    from facedata.project import Project

    root = str(Path(root).resolve())
    order = read_dag(Path(root) / "dvc.yaml")
    if stages:
        unknown = set(stages) - set(order)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; dvc.yaml has {order}")
        order = [s for s in order if s in stages or s == "check"]
    checked = check_project(root)
    if not checked.ok:
        raise ParamsError("params.yaml has problems; nothing was run:\n" + "\n".join(checked.errors))
    results = {}
    with project_lock(root, "facedata build", wait=wait):
        if refresh_versions(root, Project(Path(root)).params):
            get_run_logger().info("code or models changed since the last build: versions.yaml rewritten")
        for stage in order:
            results[stage] = run_stage_task(stage, root, force or (recrawl and stage == "ingest"))
    summary = "\n\n".join(metrics_markdown(s, m) for s, m in results.items())
    create_markdown_artifact(markdown=summary, key="facedata-build", description="facedata build summary")
    return results
