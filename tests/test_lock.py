"""The project lock: one writer of data/ at a time, waiting or refusing with the holder named; never stale;
inherited by a holder's child processes; threads of one process wait like other processes do."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from facedata import lock
from facedata.lock import ProjectBusy, holder, project_lock

HOLD = """
import sys, time
from facedata.lock import project_lock
with project_lock(sys.argv[1], "facedata ingest-video clip.mp4"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_child(root, seconds: float = 60.0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    child = hold_in_child(tmp_path)
    try:
        info = holder(tmp_path)
        assert info["pid"] == child.pid and info["command"] == "facedata ingest-video clip.mp4"
        with pytest.raises(ProjectBusy) as exc, project_lock(tmp_path, "test"):
            pass
        message = str(exc.value)
        assert f"pid {child.pid}" in message and "facedata ingest-video clip.mp4" in message
        assert "--wait" in message
    finally:
        child.kill()
        child.wait()


def test_a_writer_waits_for_the_holder_to_finish(tmp_path):
    child = hold_in_child(tmp_path, seconds=1.5)
    try:
        with project_lock(tmp_path, "waiter", wait=60):
            assert child.poll() is not None  # got it only after the holder ended
            assert holder(tmp_path)["pid"] == os.getpid()
    finally:
        child.wait()
    assert holder(tmp_path) is None


def test_kill_9_never_leaves_a_stale_lock(tmp_path):
    child = hold_in_child(tmp_path)
    child.kill()
    child.wait()
    assert holder(tmp_path) is None  # the record of the dead holder is still in the file, but nobody holds it
    with project_lock(tmp_path, "next"):
        assert holder(tmp_path)["command"] == "next"


def test_child_processes_of_the_holder_pass_through(tmp_path):
    code = "import sys; from facedata.lock import project_lock\nwith project_lock(sys.argv[1]): print('in')"
    with project_lock(tmp_path, "facedata build"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "in", out.stderr
        with project_lock(tmp_path, "nested"):  # re-entrant in one thread
            assert holder(tmp_path)["command"] == "facedata build"
    # Without the holder's token, a child is an ordinary writer; a forged token is not enough.
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, lock.ENV: f"{lock.lock_path(tmp_path)}\tforged"},
    )
    assert out.returncode == 0  # nobody holds it now: it simply takes the lock


def test_other_threads_wait_like_other_processes(tmp_path):
    order: list[str] = []
    with project_lock(tmp_path, "main"):
        t = threading.Thread(target=lambda: _take(tmp_path, order))
        t.start()
        time.sleep(0.5)
        order.append("main done")
    t.join(30)
    assert order == ["main done", "thread in"]
    with project_lock(tmp_path, "main"):

        def refused():
            with pytest.raises(ProjectBusy, match="another thread"), project_lock(tmp_path, "t"):
                pass
            order.append("refused")

        t = threading.Thread(target=refused)
        t.start()
        t.join(30)
    assert order[-1] == "refused"


def _take(root, order):
    with project_lock(root, "thread", wait=30):
        order.append("thread in")


def test_stage_runner_refuses_while_another_writer_holds_the_project(tmp_path, capsys, monkeypatch):
    from .collect_servers import write_project

    write_project(tmp_path, {})
    monkeypatch.setenv(lock.WAIT_ENV, "0")
    child = hold_in_child(tmp_path)
    try:
        from facedata.pipeline.runner import run_stage

        assert run_stage("ingest", tmp_path) == 2
    finally:
        child.kill()
        child.wait()
    err = capsys.readouterr().err
    assert "facedata ingest: busy: " in err and f"pid {child.pid}" in err
