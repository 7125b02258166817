"""Running one pipeline stage: what every stage shares (params, lineage, metrics file, errors, progress).

`stages/<name>.py` (the DVC entry point) and `facedata stage <name>` both call `run_stage(name)`, which
loads the project's params, calls `facedata.pipeline.<name>.run(ctx)`, writes the metrics the stage returns to
`data/metrics/<name>.json` (DVC metrics), and turns known failures into one readable line and an exit code.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from facedata import atomic, manifest
from facedata.lineage import Recipe, model_of
from facedata.lineage.codedeps import code_hash
from facedata.params import DefaultsUsed, ParamsError, params_hash
from facedata.pipeline.dag import STAGE_DEFS
from facedata.project import Project, ProjectError

if TYPE_CHECKING:
    from facedata.models import ModelId

#: The stages in DAG order, and the parameter keys DVC tracks for each (both from the one DAG definition).
STAGES = tuple(d.name for d in STAGE_DEFS)
TRACKED_PARAMS: dict[str, list[str]] = {d.name: list(d.params) for d in STAGE_DEFS}

#: Parameter keys that shape each output row, hashed into its lineage. For ingest the source list decides
#: which items exist, not how an item is processed, so adding a source does not invalidate stored images.
ROW_PARAMS: dict[str, list[str]] = {**TRACKED_PARAMS, "ingest": ["ingest"]}


class StageFailed(RuntimeError):
    """A stage ran but must fail (a quality gate, an input that makes its output meaningless)."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


@dataclass
class StageContext:
    project: Project
    stage: str
    params: dict
    recipe: Recipe  # params hash + code hash: stamps lineage, decides reuse
    started: float = field(default_factory=time.perf_counter)
    #: Counters of this run (workers, rows reused, seconds...): the run report, not the stage's metrics, so
    #: metrics files hold results only and a rerun that reuses everything leaves them byte-identical.
    run: dict = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def p(self) -> dict:
        """This stage's own params section."""
        return self.params.get(self.stage, {})

    @property
    def row_params_hash(self) -> str:
        return self.recipe.params_hash

    def lineage(self, model: ModelId | None = None) -> dict:
        return self.recipe.lineage(self.root, model)

    def reusable(self, lineage: dict | None, model: ModelId | None = None) -> bool:
        """Whether a row with this lineage is what this run would make (params, code and model unchanged)."""
        return self.recipe.made(lineage, model)

    def progress(self, iterable=None, total: int | None = None, desc: str | None = None, unit: str = "it"):
        """A progress bar on stderr; under DVC/Prefect (no tty) it prints a line every few seconds instead."""
        tty = sys.stderr.isatty()
        return tqdm(
            iterable,
            total=total,
            desc=desc or self.stage,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=tty,
            mininterval=0.2 if tty else 10.0,
            ascii=not tty,
            leave=tty,
        )

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def make_context(stage: str, root: str | Path | None = None) -> StageContext:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    project = Project.find(root)
    with warnings.catch_warnings():
        # the check stage, which runs before every stage, reports the keys that took their defaults
        warnings.simplefilter("ignore", DefaultsUsed)
        params = project.params
    recipe = Recipe(stage, params_hash(params, ROW_PARAMS[stage]), code_hash(stage))
    return StageContext(project, stage, params, recipe)


#: Write errors that mean the disk (or a quota, or a file-size limit) is full: no retry can help.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def disk_full_message(exc: OSError) -> str:
    where = f" writing {exc.filename}" if exc.filename else ""
    return (
        f"no space left{where} ({exc.strerror}); every file is written atomically, so what was saved before is "
        "intact: free some space and run it again (finished work is reused)"
    )


#: How a failed stage's message starts (`facedata <stage>: <mark>: ...`), so the Prefect flow knows whether
#: a retry can help: a refused gate or a setup problem stays refused until someone acts; a busy project frees.
GATE_MARK = "FAILED"
SETUP_MARK = "cannot run"
BUSY_MARK = "busy"


def run_stage(stage: str, root: str | Path | None = None) -> int:
    """Run one stage under the project lock; returns the process exit code (0 ok, 1 the stage failed a check,
    2 it cannot run: bad setup, or another writer holds the project)."""
    from facedata.interrupt import sigterm_as_interrupt
    from facedata.lock import ProjectBusy, project_lock, stage_wait

    try:
        ctx = make_context(stage, root)
    except (ParamsError, ProjectError, ValueError) as exc:
        print(f"facedata {stage}: {SETUP_MARK}: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"facedata.pipeline.{stage}")
    try:
        with project_lock(ctx.root, f"facedata stage {stage}", wait=stage_wait()), sigterm_as_interrupt():
            metrics = module.run(ctx)
    except StageFailed as exc:
        _write_metrics(ctx, {**exc.metrics, "ok": False})
        _write_run_report(ctx, ok=False)
        print(f"facedata {stage}: {GATE_MARK}: {exc}", file=sys.stderr)
        return 1
    except ProjectBusy as exc:
        print(f"facedata {stage}: {BUSY_MARK}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"facedata {stage}: interrupted: finished work is saved; rerun to resume", file=sys.stderr)
        return 143 if "signal" in str(exc) else 130
    except KnownErrors as exc:
        print(f"facedata {stage}: {SETUP_MARK}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("FACEDATA_DEBUG"):
            traceback.print_exc()
        return 2
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        print(f"facedata {stage}: {SETUP_MARK}: {disk_full_message(exc)}", file=sys.stderr)
        return 2
    metrics = {**metrics, "ok": True}
    _write_metrics(ctx, metrics)
    report = _write_run_report(ctx, ok=True)
    print(
        f"facedata {stage}: done in {report['seconds']:.1f}s: {summarize(metrics)}; "
        f"this run: {summarize(ctx.run)}",
        file=sys.stderr,
    )
    return 0


def _write_metrics(ctx: StageContext, metrics: dict) -> None:
    """The stage's results (DVC metrics): what it produced, never how this run went, so a rerun that reuses
    every row writes the same bytes and `dvc metrics diff` shows only real changes."""
    atomic.write_json(ctx.project.metrics_path(ctx.stage), metrics)


def run_report_path(root: str | Path, stage: str) -> Path:
    """Where a stage's last run report is: `data/reports/runs/<stage>.json` (not tracked by git or DVC)."""
    return Path(root) / "data" / "reports" / "runs" / f"{stage}.json"


def _write_run_report(ctx: StageContext, ok: bool) -> dict:
    """How the last run of the stage went: its counters (rows reused, workers...), time, run id and code."""
    from facedata.lineage import current_run_id, now_utc

    report = {
        "stage": ctx.stage,
        "ok": ok,
        "run_id": current_run_id(),
        "finished_at": now_utc().isoformat(),
        "seconds": ctx.elapsed(),
        "code_hash": ctx.recipe.code_hash,
        "params_hash": ctx.recipe.params_hash,
        **ctx.run,
    }
    atomic.write_json(run_report_path(ctx.root, ctx.stage), report)
    return report


def summarize(metrics: dict, limit: int = 12) -> str:
    """`key=value` for the scalars (one level into dicts: `assignment.mode=full`), at most `limit`."""
    flat = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            flat += [(f"{k}.{kk}", vv) for kk, vv in v.items()]
        else:
            flat.append((k, v))
    flat = [(k, v) for k, v in flat if isinstance(v, int | float | str | bool) and k != "ok"]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in flat[:limit])


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _known_errors() -> tuple[type[BaseException], ...]:
    from facedata.manifest import ManifestError
    from facedata.models import ModelError
    from facedata.scale.connect import ScaleError

    return (ParamsError, ProjectError, ManifestError, ModelError, ScaleError, FileNotFoundError, PermissionError)


KnownErrors = _known_errors()


def main(stage: str) -> None:
    """Entry point for `python -m stages.<name>`."""
    sys.exit(run_stage(stage))


def embeddings_model(root: str | Path, model: str) -> ModelId | None:
    """The identity of the stored vectors of `embed.model` (from their lineage), for stages that use them
    (cluster, export); None when there are none, or they were made by several."""
    emb = manifest.read("embeddings", root, missing_ok=True, columns=["model", "lineage"])
    if not emb.num_rows:
        return None
    lin = emb.filter(pc.equal(emb["model"], model))["lineage"].combine_chunks()
    fields = ("model_name", "model_version", "model_sha256")
    combos = pa.table({f: lin.field(f) for f in fields}).group_by(list(fields)).aggregate([])
    return model_of(combos.to_pylist())
