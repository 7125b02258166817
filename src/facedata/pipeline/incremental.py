"""The incremental pattern shared by per-item stages (detect, embed, reconstruct3d): reuse rows made earlier by
the same params, code and model, process only the rest in batches, and checkpoint to disk as it goes, so a
killed run loses at most one checkpoint interval of work and a rerun picks up where it stopped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from facedata import manifest
from facedata.pipeline.runner import StageContext

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
    for name, items in rows.items():
        manifest.write(name, manifest.from_rows(name, items), ctx.root)
