"""Stopping cleanly when asked to: SIGTERM (a scheduler cancelling a run, `kill`, a container stopping) is
turned into KeyboardInterrupt, so the code that Ctrl-C already unwinds (checkpoints, lock release, the Prefect
temporary server's shutdown) runs for it too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block (its message names the signal), so a partial result is
    checkpointed and locks are released before the process ends. Only in the main thread; a no-op elsewhere."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
