"""The incremental pattern shared by per-item stages (detect, embed, reconstruct3d): reuse rows made earlier by
the same params, code and model, process only the rest in batches, and checkpoint to disk as it goes, so a
killed run loses at most one checkpoint interval of work and a rerun picks up where it stopped. `run_items` runs
the batches over local worker processes, or as shards on a Dask cluster when one is configured
(`facedata.scale`); both make the same rows."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from facedata import manifest
from facedata.faces.pool import map_ordered
from facedata.models import MODELS_DIR_ENV
from facedata.pipeline.runner import StageContext, StageFailed
from facedata.scale import ShardJob, connect, dask_address, run_sharded
from facedata.scale.shards import ShardsFailed

if TYPE_CHECKING:
    from facedata.models import ModelId

Rows = dict[str, list[dict]]


def reusable(
    table_rows: list[dict],
    ctx: StageContext,
    keep: Callable[[dict], bool] = lambda r: True,
    model: ModelId | None = None,
) -> list[dict]:
    """Rows this run would make as they are (params, code and `model` unchanged: `StageContext.reusable`) and
    that `keep` accepts."""
    return [r for r in table_rows if ctx.reusable(r["lineage"], model) and keep(r)]


def run_batches(
    ctx: StageContext,
    todo: Sequence,
    batch_size: int,
    process_batch: Callable[[list], Rows],
    base: Rows,
    desc: str,
    unit: str,
    checkpoint_seconds: float | None = None,
) -> Rows:
    """Process `todo` in batches; returns base rows plus new rows per manifest, checkpointed periodically
    (every `checkpoint_seconds`, default $FACEDATA_CHECKPOINT_SECONDS or 30)."""
    if checkpoint_seconds is None:
        checkpoint_seconds = float(os.environ.get("FACEDATA_CHECKPOINT_SECONDS", "30"))
    new: Rows = {name: [] for name in base}
    last = time.monotonic()
    with ctx.progress(total=len(todo), desc=desc, unit=unit) as bar:
        try:
            for start in range(0, len(todo), batch_size):
                batch = list(todo[start : start + batch_size])
                for name, rows in process_batch(batch).items():
                    new[name].extend(rows)
                bar.update(len(batch))
                if time.monotonic() - last > checkpoint_seconds:
                    write_all(ctx, {n: base[n] + new[n] for n in base})
                    last = time.monotonic()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see facedata.interrupt): keep the finished batches
            if any(new.values()):
                write_all(ctx, {n: base[n] + new[n] for n in base})
            raise
    return {n: base[n] + new[n] for n in base}


def write_all(ctx: StageContext, rows: Rows) -> None:
    """Write each manifest (each atomically). The first names the items done (detect: `detections`, then its
    `faces`): it is written last, so a run killed between two writes leaves rows without the marker (the item
    is done again) rather than a marker whose rows were never written (the item's faces lost)."""
    for name, items in reversed(rows.items()):
        manifest.write(name, manifest.from_rows(name, items), ctx.root)


def run_items(
    ctx: StageContext,
    todo: Sequence[dict],
    batch_size: int,
    factory: Callable[..., Any],
    factory_args: tuple,
    fn: Callable[[Any, list], Any],
    to_rows: Callable[[Any, Any], Rows],
    rows_args: Any,
    base: Rows,
    model: ModelId | None,
    workers: int,
    desc: str,
    unit: str,
) -> Rows:
    """Process `todo` in batches of `batch_size`: `state = factory(*factory_args)` once per worker,
    `to_rows(fn(state, batch), rows_args)` per batch (module-level functions: they travel to worker processes
    by name). Over `workers` local processes with `run_batches` checkpoints, or, with a Dask address in force
    (`facedata.scale.dask_address`), as shards on that cluster. Returns base rows plus new rows per manifest;
    `ctx.run["workers"]` says how many workers ran it."""
    address = dask_address(ctx.params)
    artifact = ctx.project.reports_dir / ctx.stage / "dask.artifact.md"
    if address and todo:
        job = ShardJob(
            ctx.stage,
            str(ctx.root),
            factory,
            factory_args,
            fn,
            to_rows,
            rows_args,
            ctx.recipe.code_hash,
            int(ctx.params.get("execution", {}).get("worker_threads", 1)),
            tuple((k, os.environ[k]) for k in (MODELS_DIR_ENV,) if os.environ.get(k)),
            model,
        )
        with connect(address) as client:
            try:
                rows = run_sharded(
                    ctx, client, job, todo, batch_size, base, model, desc, unit, lambda r: write_all(ctx, r)
                )
            except ShardsFailed as exc:
                raise StageFailed(str(exc)) from exc
        ctx.run["workers"] = ctx.run["dask_workers"]
        return rows
    artifact.unlink(missing_ok=True)  # a page about an earlier Dask run would mislead the build's watchers
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    results = map_ordered(factory, factory_args, fn, batches, workers) if todo else iter(())
    ctx.run["workers"] = workers
    return run_batches(
        ctx, todo, batch_size, lambda _batch: to_rows(next(results), rows_args), base, desc=desc, unit=unit
    )
