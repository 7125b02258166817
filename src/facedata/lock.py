"""One writer of a project's data at a time: the project lock, `data/.facedata.lock`.

Everything that writes under `data/` holds it: each DVC stage while it runs (`facedata.pipeline.runner`), a
whole `facedata build` (its stages inherit it), `facedata ingest-urls` / `ingest-video`, and the review app's
writes (`with writing(root, "facedata review", ...)`). A second writer waits up to its `wait` seconds, then
refuses with `ProjectBusy` naming the holder (pid, host, command, since when).

The lock is a POSIX record lock on the file, so the kernel releases it when the holder ends, however it ends
(kill -9 included): a lock is never left stale. The file's text only names the last holder; a name whose
process is gone is reported as such. Child processes of a holder (the `dvc repro` a build runs, and the stage
it starts) are covered by their parent's lock: the holder puts the lock's token in `$FACEDATA_LOCK`.

Writers outside DVC (`writing(..., dvc_outs=...)`) also register as writers of those outputs in DVC's own
read/write lock (`.dvc/tmp/rwlock`), the one `dvc repro` takes for a stage's deps and outs from the moment it
checks the stage until it has hashed the results. So a plain `dvc repro` never records a manifest that
changed under it as a stage's input: either the writer waits for the stage, or DVC refuses the stage with
"is busy" and names the writer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = Path("data") / ".facedata.lock"
ENV = "FACEDATA_LOCK"  # "<lock file path>\t<token>": set while held, inherited by child processes
WAIT_ENV = "FACEDATA_LOCK_WAIT"  # seconds a DVC stage waits for the lock (default STAGE_WAIT)
STAGE_WAIT = 10.0
POLL = 0.2
_FLOCK = "hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid


class ProjectBusy(RuntimeError):
    """Another process is writing this project's data."""


@dataclass
class _Held:
    fd: int
    token: str
    owner: int  # thread ident
    count: int
    env_before: str | None


_state: dict[str, _Held] = {}
_guard = threading.Condition()


def lock_path(root: str | os.PathLike) -> Path:
    return Path(os.path.realpath(root)) / LOCK_FILE


def command_line() -> str:
    """How this process was started, for lock holders' records: `facedata ingest-video clip.mp4`..."""
    argv = list(sys.argv) or ["python"]
    head = Path(argv[0]).name
    if head in ("__main__.py", "-m") or head.startswith("python"):
        head = "python"
    return " ".join([head, *argv[1:]])[:300]


def holder(root: str | os.PathLike) -> dict | None:
    """Who holds the project lock ({pid, host, command, since}), or None when nobody does."""
    path = lock_path(root)
    with _guard:
        if str(path) in _state:  # this process: never open the file again (closing it would drop the lock)
            return _info_of(_state[str(path)].fd)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        pid = _holder_pid(fd)
        return None if pid is None else {**_info_of(fd), "pid": pid}
    finally:
        os.close(fd)


def describe(info: dict | None) -> str:
    if not info:
        return "another process"
    get = lambda k: info.get(k, "?")  # noqa: E731
    return f"pid {get('pid')} on {get('host')} ({get('command')}, since {get('since')})"


@contextlib.contextmanager
def project_lock(root: str | os.PathLike, command: str | None = None, wait: float = 0.0) -> Iterator[None]:
    """Hold the project lock for the block: wait up to `wait` seconds for another holder, then raise
    `ProjectBusy`. Re-entrant in one thread; other threads of the process wait as other processes do; a
    child process of the holder passes straight through."""
    path = lock_path(root)
    key = str(path)
    if _inherited(path):
        yield
        return
    me = threading.get_ident()
    deadline = time.monotonic() + max(0.0, wait)
    with _guard:
        while key in _state and _state[key].owner != me:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProjectBusy(_busy_message(root, None, "another thread of this process"))
            _guard.wait(min(left, POLL))
        if key in _state:
            _state[key].count += 1
            held = _state[key]
        else:
            held = _acquire(root, path, command or command_line(), deadline)
            _state[key] = held
    try:
        yield
    finally:
        with _guard:
            held.count -= 1
            if held.count == 0:
                del _state[key]
                _release(held)
                _guard.notify_all()


def _inherited(path: Path) -> bool:
    """Whether a parent process holds the lock for us (its token is in our environment and still held)."""
    value = os.environ.get(ENV, "")
    lock_file, _, token = value.partition("\t")
    if not token or lock_file != str(path) or str(path) in _state:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _holder_pid(fd) is not None and _info_of(fd).get("token") == token
    finally:
        os.close(fd)


def _acquire(root, path: Path, command: str, deadline: float) -> _Held:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise ProjectBusy(
                        f"cannot lock {path} ({exc.strerror}): facedata needs a filesystem with POSIX locks "
                        "for the project's data/ folder"
                    ) from exc
            if time.monotonic() >= deadline:
                raise ProjectBusy(_busy_message(root, _current_holder(fd), None))
            time.sleep(POLL)
        token = uuid.uuid4().hex
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "token": token,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)  # closing drops a POSIX lock this process may have taken
        raise
    before = os.environ.get(ENV)
    os.environ[ENV] = f"{path}\t{token}"
    return _Held(fd, token, threading.get_ident(), 1, before)


def _release(held: _Held) -> None:
    if held.env_before is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = held.env_before
    with contextlib.suppress(OSError):
        os.ftruncate(held.fd, 0)
    os.close(held.fd)  # releases the lock


def _holder_pid(fd: int) -> int | None:
    """The pid holding a lock on the file, asked of the kernel without taking the lock (F_GETLK)."""
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        l_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    except OSError:
        return None
    return None if l_type == fcntl.F_UNLCK else pid


def _info_of(fd: int) -> dict:
    """What the holder recorded in the file (empty when unreadable or being written)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _current_holder(fd: int) -> dict | None:
    pid = _holder_pid(fd)
    if pid is None:
        return None
    info = _info_of(fd)
    # The kernel's pid is the truth; a record naming another process is left over from an earlier holder.
    return {**info, "pid": pid} if info.get("pid") == pid else {"pid": pid}


def _busy_message(root, info: dict | None, who: str | None) -> str:
    return (
        f"the project {Path(root).resolve()} is busy: {who or describe(info)} is writing its data. "
        "Wait for it to finish (or give the command --wait SECONDS), then run this again."
    )


def stage_wait() -> float:
    """How long a DVC stage waits for the project lock: $FACEDATA_LOCK_WAIT seconds (default 10)."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, STAGE_WAIT)))
    except ValueError:
        return STAGE_WAIT


@contextlib.contextmanager
def writing(
    root: str | os.PathLike, command: str | None = None, wait: float = 0.0, dvc_outs: Iterable[str] = ()
) -> Iterator[None]:
    """The lock for a writer outside DVC: the project lock, plus DVC's read/write lock on the stage outputs it
    writes (`dvc_outs`, project-relative), so a `dvc repro` running a stage that reads them is waited for and
    a later one refuses those stages while this block runs. Waits up to `wait` seconds in all."""
    deadline = time.monotonic() + max(0.0, wait)
    outs = [os.path.join(os.path.realpath(root), o) for o in dvc_outs]
    while True:
        with project_lock(root, command, wait=max(0.0, deadline - time.monotonic())):
            try:
                with _dvc_write_lock(root, command or command_line(), outs):
                    yield
                    return
            except DvcBusy as exc:
                busy = exc
        # A DVC stage is using these outputs: let go of the project lock (the stage may need it) and retry.
        if time.monotonic() >= deadline:
            raise ProjectBusy(
                f"the project {Path(root).resolve()} is busy: {busy} Wait for it to finish (or give the "
                "command --wait SECONDS), then run this again."
            )
        time.sleep(min(1.0, max(POLL, deadline - time.monotonic())))


class DvcBusy(RuntimeError):
    pass


@contextlib.contextmanager
def _dvc_write_lock(root, command: str, outs: list[str]) -> Iterator[None]:
    dvc_dir = Path(os.path.realpath(root)) / ".dvc"
    if not outs or not dvc_dir.is_dir():
        yield
        return
    from dvc.fs import localfs
    from dvc.lock import LockError
    from dvc.rwlock import rwlock

    tmp = dvc_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(rwlock(str(tmp), localfs, command, [], outs, _hardlink_lock(dvc_dir)))
    except LockError as exc:
        first = str(exc).split("\n\nIf there are")[0].replace("\n", " ").strip()
        raise DvcBusy(f"a DVC stage is using its outputs ({first}).") from exc
    with stack:
        yield


def _hardlink_lock(dvc_dir: Path) -> bool:
    """DVC's `core.hardlink_lock` setting (lock files on filesystems without POSIX locks)."""
    try:
        from dvc.config import Config

        return bool(Config(dvc_dir=str(dvc_dir))["core"].get("hardlink_lock", False))
    except Exception:  # an unreadable config is DVC's to report; the default is what DVC itself would use
        return False
