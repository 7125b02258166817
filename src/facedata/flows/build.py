"""The Prefect build flow: one task per DVC stage, `dvc repro --single-item <stage>`, in DAG order.

DVC decides whether a stage is stale and caches its outputs; Prefect runs, retries, logs and shows. Each task
streams the stage's own output into its log at the level it was said at (a failure at ERROR; DVC's chatter and
third-party warnings only at DEBUG), publishes the stage's metrics as a markdown artifact, and fails with the
stage's own message and exit code. A stage DVC finds up to date ends as a Completed task named `Skipped` ("skipped
(up to date)") and republishes nothing; stages after a failure end as `NotRun`. The run is named after the git
revision and the params that differ from it (and tagged with both); its `facedata-build` artifact is the summary
`facedata build` prints.

A quality-gate failure and a stage that cannot run (bad params, a corrupt manifest, a missing model) are final;
anything else (a crash, DVC's lock held by another run) is retried once. The flow checks params.yaml before the
first stage and holds the project lock (`facedata.lock`) for the whole build; its stages inherit it. Interrupted
(Ctrl-C, SIGTERM), it stops the running stage's process group before it lets go. With no `PREFECT_API_URL`,
Prefect runs the flow on a temporary local server; with one set, the runs show in that server's UI.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Cancelled, Completed, State  # noqa: E402

from facedata import atomic, gitinfo  # noqa: E402
from facedata.lineage import RUN_ID_ENV  # noqa: E402
from facedata.lock import project_lock  # noqa: E402
from facedata.params import ParamsError  # noqa: E402
from facedata.pipeline.dag import read_dag, refresh_versions  # noqa: E402
from facedata.pipeline.runner import BUSY_MARK, GATE_MARK, SETUP_MARK, run_report_path  # noqa: E402
from facedata.pipeline.summary import build_record_path, summary_text  # noqa: E402

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


#: DVC's per-stage chatter: the task says what it means (ran, skipped, failed) itself. Logged at DEBUG only.
DVC_CHATTER = re.compile(
    r"^(To track the changes with git|\s*git add |To enable auto staging|\s*dvc config core\.autostage"
    r"|Use `dvc push`|Updating lock file|Generating lock file|Running stage '|> |Stage '.*' didn't change"
    r"|Stage '.*' is cached|Restored stage|ERROR: failed to reproduce|Data and pipelines are up to date"
    r"|WARNING: (stage: '.*' )?is cached)"
)
#: A third-party library's `warnings.warn` (`/path/x.py:55: UserWarning: ...`) and abseil/TF-style lines.
THIRD_PARTY_WARNING = re.compile(
    r"^(\S+\.py:\d+: \w*Warning: |[WIE]\d{4} [\d:.]+\s+\d+ \S+\.(cc|h):\d+\] "
    r"|WARNING: All log messages before absl|INFO: Created TensorFlow Lite)"
)
FAILED_EXIT = re.compile(r"exited with (-?\d+)")


def _failure_line(stage: str) -> re.Pattern:
    """How `facedata.pipeline.runner` starts the line that says why the stage failed."""
    return re.compile(rf"^facedata {re.escape(stage)}: ({GATE_MARK}|{SETUP_MARK}|{BUSY_MARK}): ")


def classify_lines(stage: str, lines: list[str]) -> list[tuple[int, str]]:
    """Each output line with the level to log it at: the stage's failure (and the lines that continue it, and
    a traceback) at ERROR, warnings at WARNING, its other output at INFO, DVC chatter and third-party
    warnings (with their source line) at DEBUG."""
    own_failure = _failure_line(stage)
    out: list[tuple[int, str]] = []
    block = None  # the level of the block a continuation line (indented) belongs to
    for line in lines:
        if block is not None and line[:1].isspace():
            out.append((block, line))
            continue
        block = None
        if DVC_CHATTER.match(line):
            level = logging.DEBUG
        elif THIRD_PARTY_WARNING.match(line):
            level = block = logging.DEBUG
        elif own_failure.match(line) or line.startswith("Traceback (most recent call last)"):
            level = block = logging.ERROR
        elif re.match(r"^(warning|WARNING)\b|: warning: |^facedata \S+: interrupted", line):
            level = logging.WARNING
        elif out and out[-1][0] == logging.ERROR and out[-1][1][:1].isspace() and not line[:1].isspace():
            level = logging.ERROR  # the exception line that ends a traceback
        else:
            level = logging.INFO
        out.append((level, line))
    return out


def stage_outcome(stage: str, lines: list[str], dvc_rc: int) -> dict:
    """What DVC did with the stage: `ran`, `skipped` (up to date), `restored` (from its run cache) or
    `failed`; for a failure, the stage's own exit code and message (not DVC's wrapper)."""
    text = "\n".join(lines)
    if dvc_rc == 0:
        if f"Running stage '{stage}'" in text:
            return {"status": "ran"}
        if "is cached" in text or "Restored stage" in text:
            return {"status": "restored"}
        return {"status": "skipped"}
    codes = FAILED_EXIT.findall(text)
    code = int(codes[-1]) if codes else dvc_rc
    levels = classify_lines(stage, lines)
    own = [line for level, line in levels if level == logging.ERROR and not line.startswith("ERROR: ")]
    prefix = _failure_line(stage)
    at = next((i for i, line in enumerate(own) if prefix.match(line)), None)
    first = None
    if at is not None:
        first = prefix.sub("", own[at]).rstrip(":")
        details = [line.strip() for line in own[at + 1 :] if line[:1].isspace()]
        if details:  # e.g. the failing checks of a gate: the first, and how many more
            first += f": {details[0]}" + (f" (+{len(details) - 1} more)" if len(details) > 1 else "")
    elif own:
        first = own[-1].strip()  # a crash: the traceback's last line says what went wrong
    if first is None:
        said = [line for level, line in levels if level in (logging.INFO, logging.WARNING)]
        first = said[-1].strip() if said else next((line for line in lines if line.startswith("ERROR")), "")
    what = "exit" if codes else "dvc exit"
    return {
        "status": "failed",
        "code": code,
        "message": f"stage {stage} failed ({what} {code}): {first}",
        "gate": any(m.group(1) == GATE_MARK for m in map(prefix.match, lines) if m),
        "setup": any(m.group(1) == SETUP_MARK for m in map(prefix.match, lines) if m),
    }


SKIPPED = "skipped (up to date)"
RESTORED = "restored from DVC's run cache (not rerun)"


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_unless_gate,
)
def run_stage_task(stage: str, root: str, force: bool = False) -> dict | State:
    logger = get_run_logger()
    cmd = [dvc_executable(), "repro", "--single-item", stage] + (["--force"] if force else [])
    env = stage_env()
    env[RUN_ID_ENV] = str(flow_run.get_id() or env.get(RUN_ID_ENV, ""))
    logger.debug("$ %s", " ".join(cmd))
    lines: list[str] = []
    level = StreamLevels(stage)
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
                    logger.log(level(part), part)
                    lines.append(part)
        rc = proc.wait()
    except BaseException:
        stop_process_group(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    outcome = stage_outcome(stage, lines, rc)
    metrics = _read_json(Path(root) / "data" / "metrics" / f"{stage}.json")
    if outcome["status"] in ("skipped", "restored"):
        note = SKIPPED if outcome["status"] == "skipped" else RESTORED
        create_markdown_artifact(
            markdown=f"### facedata stage `{stage}`: {note}\n\nDVC found its code, params and inputs unchanged, "
            f"so it did not run in this build; its last results stay in `data/metrics/{stage}.json`.",
            key=f"facedata-{stage}",
            description=f"stage {stage}: {note}",
        )
        return Completed(
            name="Skipped" if outcome["status"] == "skipped" else "Restored", message=note, data=metrics
        )
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
    publish_stage_pages(root, stage)
    if outcome["status"] == "failed":
        if outcome["gate"] or metrics.get("ok") is False:
            exc: type[RuntimeError] = StageGateFailed
        elif outcome["setup"]:
            exc = StageSetupError
        else:
            exc = StageCrashed
        raise exc(outcome["message"])
    return metrics


class StreamLevels:
    """`classify_lines` for a stream, one line at a time (a block's continuation lines keep its level)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.seen: list[str] = []

    def __call__(self, line: str) -> int:
        self.seen.append(line)
        return classify_lines(self.stage, self.seen[-60:])[-1][0]


@task(name="dvc-stage-not-run", task_run_name="{stage}")
def stage_not_run(stage: str, reason: str) -> State:
    """A stage the build did not reach: shown as such (state `NotRun`), not left out of the run."""
    return Cancelled(name="NotRun", message=f"not run: {reason}")


def publish_stage_pages(root: str | Path, stage: str) -> None:
    """What a stage leaves for people besides its metrics: the validation checks, the dataset card and
    contact sheets, the review app's address, report pages (`data/reports/<stage>/*.artifact.md`)."""
    if stage == "validate":
        report = _read_json(Path(root) / "data" / "reports" / "validate.json")
        if report:
            create_markdown_artifact(
                markdown=validation_markdown(report, Path(root) / "data" / "reports" / "validate.html"),
                key="facedata-validation",
                description="quality gates: every check and its result",
            )
    if stage == "export":
        dataset = Path(root) / "data" / "dataset"
        if (dataset / "DATASET.md").exists():
            create_markdown_artifact(
                markdown=card_artifact_markdown(dataset),
                key="facedata-dataset-card",
                description="dataset card (data/dataset/DATASET.md)",
            )
            create_markdown_artifact(
                markdown=contact_sheets_markdown(dataset),
                key="facedata-contact-sheets",
                description="a contact sheet per identity",
            )
        create_markdown_artifact(
            markdown=review_markdown(root),
            key="facedata-review",
            description="review the build: `facedata review`",
        )
    publish_report_artifacts(root, stage)


def validation_markdown(report: dict, html: Path) -> str:
    """Every check of the validate stage (failures first) and a link to its full report."""
    n = sum(len(m["checks"]) for m in report["manifests"].values())
    failures = report.get("failures", [])
    lines = [
        f"### facedata quality gates: {'passed' if report.get('success') else 'FAILED'} "
        f"({n - len(failures)} of {n} checks passed)",
        "",
        f"Full report with failing rows: [{html.name}]({html.as_uri()}) (`{html}`)",
        "",
    ]
    if failures:
        lines += ["#### Failing checks", "", *(f"- {f}" for f in failures), ""]
    lines += ["| manifest | check | column | result | observed / unexpected |", "|---|---|---|---|---|"]
    entries = [(name, e) for name, m in report["manifests"].items() for e in m["checks"]]
    for name, e in sorted(entries, key=lambda x: x[1]["success"]):
        seen = e.get("observed_value")
        if e.get("unexpected_count") is not None:
            seen = f"{e['unexpected_count']} rows"
        lines.append(
            f"| {name} | {e['expectation']} | {e.get('column') or ''} | "
            f"{'pass' if e['success'] else '**FAIL**'} | {'' if seen is None else seen} |"
        )
    return "\n".join(lines)


def card_artifact_markdown(dataset: Path) -> str:
    """DATASET.md with its relative links made absolute (the artifact is read outside the dataset folder)."""
    text = (dataset / "DATASET.md").read_text(encoding="utf-8")
    return re.sub(r"\]\((contact_sheets/[^)]+)\)", lambda m: f"]({(dataset / m.group(1)).as_uri()})", text)


#: Contact sheets shown inline in the artifact (as small embedded images); the rest are listed by path.
INLINE_SHEETS = 24


def contact_sheets_markdown(dataset: Path) -> str:
    import base64
    import io

    from PIL import Image

    sheets = sorted((dataset / "contact_sheets").glob("*.png"))
    lines = [f"### Contact sheets ({len(sheets)} identities)", ""]
    for i, path in enumerate(sheets):
        if i < INLINE_SHEETS:
            with Image.open(path) as im:
                im.thumbnail((640, 640))
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=80)
            data = base64.b64encode(buf.getvalue()).decode()
            lines += [f"![{path.stem}](data:image/jpeg;base64,{data})", "", f"`{path}`", ""]
        else:
            lines.append(f"- `{path}`")
    return "\n".join(lines)


def review_markdown(root: str | Path) -> str:
    return (
        "### Review this build\n\n"
        f"Check and fix what the clustering is unsure about:\n\n```\nfacedata review --root {root}\n```\n\n"
        "It serves the review app on 127.0.0.1 and prints its address; decisions stick across rebuilds."
    )


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


class _StageFailureLogs(logging.Filter):
    """On Prefect's run loggers: a stage failure is reported by the stage's own lines and one message, not a
    traceback of orchestration code; on the console, Prefect's restatements of it are dropped too (the
    Prefect UI keeps them, as task and flow states)."""

    NAMES = ("StageGateFailed", "StageSetupError", "StageCrashed", "ParamsError")

    def __init__(self, console: bool = False):
        super().__init__()
        self.console = console

    def _ours(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, StageGateFailed | StageSetupError | StageCrashed | ParamsError):
            return True
        return (
            any(name in record.getMessage() for name in self.NAMES)
            or "Finished in state NotRun" in record.getMessage()
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("prefect.task_runs", "prefect.flow_runs")) or not self._ours(record):
            return True
        if self.console:
            return record.levelno < logging.ERROR and "Retry" in record.getMessage()
        record.exc_info, record.exc_text = None, None
        return True


def quiet_stage_failures() -> None:
    """Install `_StageFailureLogs` (once) on Prefect's run loggers and console handlers."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _StageFailureLogs) for f in logger.filters):
            logger.addFilter(_StageFailureLogs())
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _StageFailureLogs) for f in handler.filters
            ):
                handler.addFilter(_StageFailureLogs(console=True))


def build_run_name() -> str:
    """`build 1a2b3c4d5e` or `build 1a2b3c4d5e detect.min_score=0.6`: the revision and the params that differ
    from it, so runs can be told apart in the UI."""
    root = flow_run.parameters.get("root", ".")
    rev = gitinfo.revision(root)
    changes = gitinfo.params_changes(root)
    name = f"build {rev[:10] if rev else '(no git)'}"
    return name + (f" {gitinfo.describe_changes(changes)}" if changes else "")


def run_tags(root: str | Path) -> list[str]:
    rev = gitinfo.revision(root)
    changes = gitinfo.params_changes(root)
    tags = ["facedata", f"rev:{rev[:10]}" if rev else "rev:none"]
    tags += [f"param:{k}={v}"[:100] for k, (_, v) in list(changes.items())[:8]]
    return tags


def _tag_run(root: str) -> None:
    run_id = flow_run.get_id()
    if not run_id:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id).tags or []
        client.update_flow_run(run_id, tags=sorted(set(current) | set(run_tags(root))))


@flow(name="facedata-build", flow_run_name=build_run_name, log_prints=True)
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
    stages then rerun only if what ingest produced changed. Scheduled builds (`facedata schedule`) set it.
    Returns each stage's metrics (a skipped stage's are its last ones); a failed stage fails the flow with its
    own message, after the stages it kept from running are marked `NotRun`."""
    from facedata.pipeline.check import check_project
    from facedata.project import Project

    quiet_stage_failures()
    root = str(Path(root).resolve())
    _tag_run(root)
    order = read_dag(Path(root) / "dvc.yaml")
    if stages:
        unknown = set(stages) - set(order)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; dvc.yaml has {order}")
        order = [s for s in order if s in stages or s == "check"]
    checked = check_project(root)
    if not checked.ok:
        raise ParamsError("params.yaml has problems; nothing was run:\n" + "\n".join(checked.errors))
    results: dict[str, dict] = {}
    record: list[dict] = []
    failed: State | None = None
    failed_stage = ""
    with project_lock(root, "facedata build", wait=wait):
        if refresh_versions(root, Project(Path(root)).params):
            get_run_logger().info("code or models changed since the last build: versions.yaml rewritten")
        for stage in order:
            if failed is not None:
                stage_not_run(stage, f"stage {failed_stage} failed", return_state=True)
                record.append({"stage": stage, "state": "not run", "note": f"stage {failed_stage} failed"})
                continue
            started = time.monotonic()
            state = run_stage_task(stage, root, force or (recrawl and stage == "ingest"), return_state=True)
            seconds = round(time.monotonic() - started, 1)
            if state.is_failed():
                failed, failed_stage = state, stage
                message = str(state.result(raise_on_failure=False))
                record.append({"stage": stage, "state": "FAILED", "seconds": seconds, "note": message})
                continue
            results[stage] = state.result()
            note = {"Skipped": SKIPPED, "Restored": RESTORED}.get(state.name)
            record.append({"stage": stage, "state": note or "ran", "seconds": seconds})
    build = {"run": flow_run.name, "revision": gitinfo.revision(root), "stages": record}
    atomic.write_json(build_record_path(root), build)
    create_markdown_artifact(
        markdown=build_markdown(root, build), key="facedata-build", description="facedata build summary"
    )
    if failed is not None:
        raise failed.result(raise_on_failure=False)
    return results


def build_markdown(root: str | Path, build: dict) -> str:
    """The build artifact: what `facedata build` prints at the end, in a code block."""
    return f"### facedata build `{build['run'] or ''}`\n\n```\n{summary_text(Path(root), build)}\n```"
