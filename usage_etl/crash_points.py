"""Named crash points for the reliability tests; inert unless a test arms one.

The pipeline calls `fault_point(name)` at the moments where a crash is most dangerous (after
listing, between insert batches, between staging and the ledger, between build and swap, during
invoice publish). Two ways to arm a point:

* `USAGE_ETL_FAULT_POINT=<name>` in a run's environment: the process SIGKILLs itself there,
  the way a lost node or the OOM killer ends a run (no cleanup, no `finally`).
* `on_fault(name, action)` inside a test process: `action()` runs there (stop a server, start a
  competing run), to interleave faults deterministically without sleeping.

Cost when disarmed: one dict check and one environment lookup per call; calls happen once per
batch or phase, never per row. Points are documented in docs/security.md.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FAULT_ENV = "USAGE_ETL_FAULT_POINT"

POINTS = (
    "ingest.listed",  # the day is listed, nothing written yet
    "ingest.batch_flushed",  # a batch is fully written (ledger too) and more objects remain
    "ingest.fetched_one",  # one object of the day is fetched (usage/fetch.py), more may remain
    "ingest.before_ledger",  # a batch's rows are staged, its ledger rows are not written
    "publish.before_swap",  # the day's build tables are complete, not swapped in
    "publish.before_record",  # the day is swapped in, its publication is not recorded
    "invoices.before_swap",  # the period's lines are in the build table, not swapped in
    "invoices.before_record",  # the period's lines are swapped in, the period log is not
)

_actions: dict[str, Callable[[], None]] = {}


def fault_point(name: str) -> None:
    if _actions:
        action = _actions.pop(name, None)  # fires once
        if action is not None:
            action()
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def on_fault(name: str, action: Callable[[], None]) -> Iterator[None]:
    """Run `action` the first time the pipeline reaches point `name` (tests only)."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    _actions[name] = action
    try:
        yield
    finally:
        _actions.pop(name, None)
