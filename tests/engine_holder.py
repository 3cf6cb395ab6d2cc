"""A second process holding the embedded engine: the single-writer rule seen from outside.

Shared by the doctor's tests and the reliability suite (tests/ is on sys.path through its
conftest), so both hold the engine the same way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def engine_held_by_another_process(dsn: str) -> Iterator[subprocess.Popen]:
    """A second process holding the embedded engine at `dsn` until the block ends (it then
    closes the engine and exits 0); yields the process, whose pid the lock names."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from usage_etl.warehouse.client import Warehouse
            wh = Warehouse.open({dsn!r}, "usage")
            print("holding", flush=True)
            sys.stdin.readline()
            wh.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield holder
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
