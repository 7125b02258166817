"""A per-item stage's work as shards on a Dask cluster, merged into the same manifests as a local run.

The stage's todo list is cut into batches (the stage's `batch_size`) and the batches into shards of about
`execution.shard_size` items. Each shard is one Dask task: on a worker it builds the stage's model once (per
worker thread, kept for the next shards), runs the stage's own batch function, turns the results into manifest
rows (lineage set, model version checked) and writes them as partial manifests in the checkpoint folder
`data/checkpoints/<stage>/`, a `<shard>.done.json` last. The driver (the DVC stage process) merges the
partials of every shard, in shard order, with the rows it reused, and the stage writes its manifests once,
atomically, as the local run does; the manifests are sorted by key on write, so the result is the local run's.

Failures: a worker lost mid-shard makes the scheduler run the shard again elsewhere; a shard that raises is
submitted again up to `execution.retries` times; each attempt leaves a start mark, so the run report counts
the retries. A shard id is a hash of the stage's recipe (params hash, code hash), the model identity and the
shard's items, so after a killed run the shards that finished are read back, not computed again.
Workers need the project folder at the same path (a shared filesystem): detect writes crops to the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from facedata import atomic, manifest
from facedata.params import canonical_json
from facedata.scale.connect import ScaleError, dashboard_link

if TYPE_CHECKING:
    from facedata.models import ModelId
    from facedata.pipeline.runner import StageContext

Rows = dict[str, list[dict]]


class ShardsFailed(ScaleError):
    """Some shards failed on every attempt; the finished ones are saved."""


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one stage run shares. The callables must be module-level functions (workers import
    them by name): `factory(*factory_args)` builds the per-worker state (the model), `fn(state, batch)` processes
    one batch, `to_rows(result, rows_args)` turns its result into manifest rows."""

    stage: str
    root: str
    factory: Callable[..., Any]
    factory_args: tuple
    fn: Callable[[Any, list], Any]
    to_rows: Callable[[Any, Any], Rows]
    rows_args: Any
    code_hash: str
    threads: int = 1
    env: tuple[tuple[str, str], ...] = ()  # set on the worker first (the project's models folder)


def checkpoint_dir(root: str | os.PathLike, stage: str) -> Path:
    return Path(root) / "data" / "checkpoints" / stage


def shard_id(ctx: StageContext, model: ModelId | None, batches: list[list[dict]]) -> str:
    """Content id of a shard: same recipe, model and items, same id (so a rerun finds it finished)."""
    key = canonical_json(
        {
            "stage": ctx.stage,
            "recipe": [ctx.recipe.params_hash, ctx.recipe.code_hash],
            "model": model,
            "items": batches,
        }
    )
    return hashlib.sha256(key.encode()).hexdigest()[:24]


# --- on the worker -------------------------------------------------------------------------------------------

_LOCAL = threading.local()


def _state(job: ShardJob):
    """The job's model state for this worker thread, built once and kept while the same job comes back."""
    from facedata.faces.pool import set_threads

    key = (job.factory.__module__, job.factory.__qualname__, canonical_json(job.factory_args), job.threads)
    cached = getattr(_LOCAL, "cached", None)
    if cached is None or cached[0] != key:
        _LOCAL.cached = None  # free the previous model first
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(job.threads)
        state = job.factory(*job.factory_args)
        set_threads(job.threads)
        _LOCAL.cached = (key, state)
    return _LOCAL.cached[1]


@lru_cache(maxsize=16)
def _worker_code_hash(stage: str) -> str:
    from facedata.lineage.codedeps import code_hash

    return code_hash(stage)


def run_shard(job: ShardJob, sid: str, batches: list[list[dict]]) -> dict[str, int]:
    """Process one shard on a worker and write its partial manifests; returns rows per manifest."""
    folder = checkpoint_dir(job.root, job.stage)
    if not folder.is_dir():
        raise ScaleError(
            f"worker {_host()} cannot see the project's checkpoint folder {folder}: Dask workers need the "
            "project on a shared filesystem at the same path"
        )
    done = folder / f"{sid}.done.json"
    if done.exists():  # finished by an attempt whose answer was lost with its worker
        return json.loads(done.read_text())
    (folder / f"{sid}.start.{uuid.uuid4().hex}").touch()
    os.environ.update(dict(job.env))
    if _worker_code_hash(job.stage) != job.code_hash:
        raise ScaleError(
            f"worker {_host()} runs other facedata code for stage {job.stage} (code hash "
            f"{_worker_code_hash(job.stage)}, the build has {job.code_hash}): install the same facedata on every "
            "worker"
        )
    state = _state(job)
    out: Rows = {}
    for batch in batches:
        for name, rows in job.to_rows(job.fn(state, batch), job.rows_args).items():
            out.setdefault(name, []).extend(rows)
    for name, rows in out.items():
        manifest.write(name, manifest.from_rows(name, rows), path=folder / f"{sid}.{name}.parquet")
    counts = {name: len(rows) for name, rows in out.items()}
    atomic.write_json(done, counts)
    return counts


def _host() -> str:
    import socket

    return socket.gethostname()


# --- in the stage ----------------------------------------------------------------------------------------------


def _read_shard(folder: Path, sid: str, names: Sequence[str]) -> Rows:
    counts = json.loads((folder / f"{sid}.done.json").read_text())
    out: Rows = {}
    for name in names:
        path = folder / f"{sid}.{name}.parquet"
        out[name] = manifest.conform(name, pq.read_table(path)).to_pylist() if name in counts else []
    return out


def run_sharded(
    ctx: StageContext,
    client,
    job: ShardJob,
    todo: Sequence[dict],
    batch_size: int,
    base: Rows,
    model: ModelId | None,
    desc: str,
    unit: str,
    write: Callable[[Rows], None],
) -> Rows:
    """Run `todo` as shards on the cluster behind `client`; returns base rows plus new rows per manifest.
    Shard counters go to `ctx.run` (the run report). On Ctrl-C/SIGTERM the finished shards are written with
    `write` before the interrupt goes on; when shards fail on every attempt, likewise, then ShardsFailed."""
    from distributed import as_completed

    ex = ctx.params.get("execution") or {}
    shard_size, retries = int(ex.get("shard_size", 256)), int(ex.get("retries", 2))
    folder = checkpoint_dir(ctx.root, ctx.stage)
    folder.mkdir(parents=True, exist_ok=True)
    # Shards are whole batches of the local run's size: a detector's batch pads its images to one size, so
    # another batch size could move a box by a rounding error, and the result must be the local run's.
    batches = [list(todo[i : i + batch_size]) for i in range(0, len(todo), batch_size)]
    per = max(1, shard_size // batch_size)
    shards = [batches[i : i + per] for i in range(0, len(batches), per)]
    ids = [shard_id(ctx, model, s) for s in shards]
    size = [sum(len(b) for b in s) for s in shards]
    results: dict[int, Rows] = {}
    for i, sid in enumerate(ids):
        if (folder / f"{sid}.done.json").exists():
            results[i] = _read_shard(folder, sid, list(base))
        else:
            for mark in folder.glob(f"{sid}.start.*"):  # attempts of a killed run: not this run's retries
                mark.unlink(missing_ok=True)
    reused = len(results)

    try:
        client.wait_for_workers(1, timeout=float(ex.get("worker_timeout_s", 120)))
    except TimeoutError as exc:
        raise ScaleError(f"the Dask cluster has no workers (waited {exc}): start `dask worker ADDRESS`") from exc
    n_workers = len(client.scheduler_info().get("workers", {}))
    link = dashboard_link(client)
    _announce(ctx, client, len(shards), reused, n_workers, link)

    def submit(i: int, attempt: int):
        return client.submit(
            run_shard, job, ids[i], shards[i], key=f"{ctx.stage}-shard-{i}-{ids[i][:8]}-{attempt}", pure=False
        )

    index = {}
    futures = []
    for i in range(len(shards)):
        if i not in results:
            f = submit(i, 0)
            index[f.key] = i
            futures.append(f)
    attempts = dict.fromkeys(index.values(), 0)
    failed: dict[int, BaseException] = {}

    def merged() -> Rows:
        return {n: base[n] + [r for i in sorted(results) for r in results[i][n]] for n in base}

    with ctx.progress(total=len(todo), desc=desc, unit=unit) as bar:
        bar.update(sum(size[i] for i in results))
        pending = as_completed(futures)
        try:
            for fut in pending:
                i = index[fut.key]
                if fut.status == "finished":
                    results[i] = _read_shard(folder, ids[i], list(base))
                    bar.update(size[i])
                    continue
                exc = fut.exception()
                if attempts[i] < retries and not isinstance(exc, ScaleError):
                    attempts[i] += 1
                    again = submit(i, attempts[i])
                    index[again.key] = i
                    futures.append(again)
                    pending.add(again)
                else:
                    failed[i] = exc
        except KeyboardInterrupt:
            client.cancel([f for f in futures if not f.done()])
            if len(results) > reused:
                write(merged())
            raise
        finally:
            retried = sum(max(0, len(list(folder.glob(f"{ids[i]}.start.*"))) - 1) for i in attempts)
            ctx.run.update(
                dask_workers=n_workers,
                dashboard=link,
                shards=len(shards),
                shards_reused=reused,
                shards_done=len(results) - reused,
                shards_failed=len(failed),
                shards_retried=retried,
            )
            _write_artifact(ctx, link)
    rows = merged()
    if failed:
        write(rows)
        i, exc = next(iter(sorted(failed.items(), key=lambda kv: kv[0])))
        raise ShardsFailed(
            f"{len(failed)} of {len(shards)} shards failed (retried up to {retries} times; first: shard {i}: "
            f"{type(exc).__name__}: {exc}); the finished shards are saved: rerun to resume"
        )
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def _announce(ctx: StageContext, client, n_shards: int, reused: int, n_workers: int, link: str | None) -> None:
    where = client.scheduler.address
    seen = f"dashboard: {link}" if link else "no dashboard (the scheduler needs bokeh for one)"
    print(
        f"facedata {ctx.stage}: {n_shards} shards ({reused} finished before) on the Dask cluster at {where}, "
        f"{n_workers} workers; {seen}",
        file=sys.stderr,
        flush=True,
    )


def _write_artifact(ctx: StageContext, link: str | None) -> None:
    """A page the Prefect build publishes with the stage (`data/reports/<stage>/*.artifact.md`)."""
    r = ctx.run
    lines = [
        f"# {ctx.stage} on Dask",
        "",
        f"Dashboard: {link}" if link else "Dashboard: none (the scheduler serves one when bokeh is installed)",
        "",
        "| shards | finished before | done | failed | retried | workers |",
        "|---|---|---|---|---|---|",
        f"| {r['shards']} | {r['shards_reused']} | {r['shards_done']} | {r['shards_failed']} | "
        f"{r['shards_retried']} | {r['dask_workers']} |",
    ]
    atomic.write_text(ctx.project.reports_dir / ctx.stage / "dask.artifact.md", "\n".join(lines) + "\n")
