"""Exclusive file locks with a bounded wait, shared by the embedded engine's lock and the
Dagster instance's set-up lock (flock: released by the kernel when the holder dies)."""

from __future__ import annotations

import fcntl
import time
from typing import IO


def flock_within(handle: IO, timeout_seconds: float) -> bool:
    """Take an exclusive lock on the open file, polling with backoff until the timeout.

    True when taken; False when another process still holds it at the deadline."""
    deadline = time.monotonic() + timeout_seconds
    delay = 0.05
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
