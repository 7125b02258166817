"""Run face work over a pool of worker processes, one model copy per process, results in input order.

Why processes: dlib/OpenCV/torch inference on small inputs does not scale across threads inside one call, and
decoding, alignment and quality code is Python holding the GIL. N single-threaded workers, each with its own
detector and recognizer loaded once (the `factory`), use N cores fully. With a GPU the models run in this
process instead (one process feeding the device beats several fighting over it).

Workers are started with `spawn`: a clean interpreter per worker, so no OpenMP/CUDA state is inherited from
the parent (forking after torch has started threads can deadlock), and the same behaviour on every OS.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_STATE: Any = None
_END = object()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and `taskset` restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(setting: int, device: str = "cpu") -> int:
    """`workers: 0` means one per available core; a GPU run uses the calling process only."""
    if device.startswith("cuda"):
        return 1
    return available_cores() if setting <= 0 else setting


def get_threads() -> tuple[int, int]:
    import cv2
    import torch

    return torch.get_num_threads(), cv2.getNumThreads()


def set_threads(n: int, n_cv2: int | None = None) -> None:
    """Limit the intra-op threads of torch and OpenCV (those already imported), so N workers do not
    oversubscribe the cores.

    Oversubscription is not a small loss: on a busy machine, torch threads beyond the free cores make each
    image many times slower."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n if n_cv2 is None else n_cv2)


#: glibc `mallopt` parameters and the values a worker process sets (`keep_model_buffers`): the ceiling glibc's own
#: dynamic mmap threshold reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), and twice it for the trim threshold, as
#: glibc's dynamic rule sets it.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_MALLOC_KEPT = False


def keep_model_buffers() -> bool:
    """Let glibc keep freed model buffers for the next forward pass (once per process; False where there is no
    glibc `mallopt`).

    Why: Dask's nanny starts every worker with `MALLOC_TRIM_THRESHOLD_=65536` (to hand memory back to the OS
    fast), and it leaks into the environment of the process that started it, so a local pool started after a
    LocalCluster inherits it too. Setting it also turns off glibc's dynamic mmap threshold: every buffer above
    128 KiB, i.e. each activation of a conv net, is then mmapped and unmapped in each forward pass and
    page-faulted in again, which made the same passes far dearer on a Dask worker than in-process
    (docs/scale.md, BENCHMARKS.md "Scale-out on Dask"). Fixed thresholds at glibc's own dynamic ceiling restore
    in-process behaviour; the heap still shrinks once more than 64 MiB lie free at its top."""
    global _MALLOC_KEPT
    if _MALLOC_KEPT:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _MALLOC_KEPT = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _MALLOC_KEPT


def _init(factory: Callable[..., Any], args: tuple, threads: int) -> None:
    global _STATE
    keep_model_buffers()
    # Before the factory imports torch (it reads these at start-up), and again after, to be sure.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    _STATE = factory(*args)
    set_threads(threads)


def _call(payload: tuple[Callable[[Any, Any], Any], Any]) -> Any:
    fn, item = payload
    return fn(_STATE, item)


def map_ordered(
    factory: Callable[..., Any],
    factory_args: tuple,
    fn: Callable[[Any, Any], Any],
    items: Iterable[Any],
    workers: int,
) -> Iterator[Any]:
    """Yield `fn(state, item)` for each item, in order, where `state = factory(*factory_args)` is built once per
    worker. `factory` and `fn` must be module-level functions (they are sent to the workers by name).

    With `workers <= 1` everything runs here, lazily, with no process start-up cost, on one thread (one worker
    is one core; the thread settings are restored afterwards). With more, a pool of `workers` processes keeps
    two items in flight per worker; while the pool is still starting (a fresh interpreter imports torch and
    loads the models: seconds), this process does the next items itself, so short jobs do not wait for the
    pool. The pool is shut down when the iterator is exhausted or closed.
    """
    if workers <= 1:
        saved = get_threads()
        set_threads(1)
        try:
            state = factory(*factory_args)
            for item in items:
                yield fn(state, item)
        finally:
            set_threads(*saved)
        return
    threads = max(1, available_cores() // workers)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(factory, factory_args, threads)) as pool:
        saved = get_threads()
        set_threads(threads)
        try:
            yield from _ordered(pool, factory, factory_args, fn, iter(items), workers)
        finally:
            set_threads(*saved)


def _noop() -> None:
    return None


def _ordered(pool, factory, factory_args, fn, it: Iterator[Any], workers: int) -> Iterator[Any]:
    # A worker answers a ping only once its initializer (imports, model loading) is done. Until one does,
    # this process works through the items itself, in order; then the pool takes the rest.
    pings = [pool.apply_async(_noop) for _ in range(workers)]
    local_state = None
    while not any(p.ready() for p in pings):
        item = next(it, _END)
        if item is _END:
            return
        if local_state is None:
            local_state = factory(*factory_args)
        yield fn(local_state, item)
    del local_state
    yield from pool.imap(_call, ((fn, item) for item in it), chunksize=1)
