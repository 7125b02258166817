"""The worker pool: results in input order, several processes, and one-thread inline mode.

Kept in its own light module: `spawn` workers import this file to find the functions they run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from facedata.faces.pool import get_threads, map_ordered, worker_count


def _wait_for(folder: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def _square_factory(offset, rendezvous=None, parent=None):
    """Worker processes check in to the rendezvous folder once their state is built."""
    if rendezvous and os.getpid() != parent:
        (Path(rendezvous) / "up").mkdir(exist_ok=True)
        (Path(rendezvous) / "up" / str(os.getpid())).touch()
    return {"offset": offset, "rendezvous": rendezvous, "in_parent": os.getpid() == parent, "first": True}


def _square(state, item):
    """item**2 + offset, and the pid that computed it.

    With a rendezvous folder: the parent (which does the first items while the pool starts) waits until both
    workers are up, and each worker's first item waits until the other worker has one too, so the test sees
    both workers take items whatever the start-up times and the machine's load."""
    folder = state["rendezvous"] and Path(state["rendezvous"])
    if folder and state["in_parent"]:
        (folder / "up").mkdir(exist_ok=True)
        _wait_for(folder / "up", 2)
    elif folder and state["first"]:
        state["first"] = False
        (folder / "busy").mkdir(exist_ok=True)
        (folder / "busy" / str(os.getpid())).touch()
        _wait_for(folder / "busy", 2)
    return item * item + state["offset"], os.getpid()


def test_pool_keeps_order_and_uses_several_processes(tmp_path):
    inline = list(map_ordered(_square_factory, (1,), _square, range(6), workers=1))
    assert [v for v, _ in inline] == [i * i + 1 for i in range(6)]
    assert {pid for _, pid in inline} == {os.getpid()}
    pooled = list(map_ordered(_square_factory, (1, str(tmp_path), os.getpid()), _square, range(40), workers=2))
    assert [v for v, _ in pooled] == [i * i + 1 for i in range(40)]
    assert len({pid for _, pid in pooled} - {os.getpid()}) == 2  # both workers took items


def test_inline_mode_runs_single_threaded_and_restores_settings():
    before = get_threads()
    seen = []

    def probe_items():
        for i in range(3):
            seen.append(get_threads()[0])
            yield i

    assert [v for v, _ in map_ordered(_square_factory, (0,), _square, probe_items(), workers=1)] == [0, 1, 4]
    assert seen[1:] == [1, 1]
    assert get_threads() == before


def test_worker_count():
    assert worker_count(3) == 3
    assert worker_count(0) >= 1
    assert worker_count(0, "cuda") == 1
