"""The Dagster daemon with a shorter backfill loop (`python -m usage_etl.daemon run -m …`).

A thin wrapper around `dagster-daemon` (same arguments, same CLI). Dagster 1.13's backfill
daemon sleeps `dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS` (30 s) between its
iterations and the instance's `backfills:` block has no setting for it, so a backfill launched
from the UI waited up to 30 s (measured 34 s) before its first run was even queued.
`execute_backfill_iteration_loop` imports that constant when the loop starts, so setting it
before the daemon's threads start is enough: this module sets it from
`USAGE_ETL_DAEMON_INTERVAL_SECONDS` (default 2 s) and then hands over to Dagster's own CLI.

The same constant is the default of one other daemon: the AssetDaemon's interval between
"pre-sensor" auto-materialize ticks (used only when the instance sets no
`auto_materialize: minimum_interval_seconds`). That one keeps Dagster's 30 s here:
`create_daemon_of_type` is wrapped to give the AssetDaemon the original value. The scheduler,
sensor, run-queue (`dequeue_interval_seconds`, 1 s in our instance files) and monitoring
daemons have their own intervals and are not affected.

A backfill in progress is *not* re-evaluated every 2 s: each evaluation of a running backfill
costs the daemon CPU (measured: 35 CPU-s of daemon at 2 s against 16 at 30 s over an October
backfill, on the 2 cores the run needs). `execute_backfill_iteration` is wrapped so that an
iteration evaluates only when a backfill is new (or newly canceling) since the last evaluation,
or Dagster's own 30 s have passed; otherwise it is the one query of the bulk-actions table that
finds nothing new. tests/test_daemon_entry.py fails if Dagster stops reading the constant or
looking the iteration up this way (docs/performance.md, "Session 9 (2026-12-01): backfills").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from usage_etl.settings import DaemonSettings, SettingsError


def apply_interval(seconds: float) -> float:
    """Set the backfill daemon's loop interval; returns Dagster's own default (30 s in 1.13)."""
    from dagster._daemon import controller
    from dagster._daemon.asset_daemon import AssetDaemon

    create = controller.create_daemon_of_type
    original = getattr(create, "dagster_default_interval", None)
    if original is None:
        original = controller.DEFAULT_DAEMON_INTERVAL_SECONDS

        def create_daemon_of_type(daemon_type, instance):
            daemon = create(daemon_type, instance)
            if (
                daemon_type == AssetDaemon.daemon_type()
                and instance.auto_materialize_minimum_interval_seconds is None
            ):
                daemon._pre_sensor_interval_seconds = original
            return daemon

        create_daemon_of_type.dagster_default_interval = original
        controller.create_daemon_of_type = create_daemon_of_type
    from dagster._daemon import backfill as backfill_daemon

    if not getattr(backfill_daemon.execute_backfill_iteration, "usage_etl_throttled", False):
        backfill_daemon.execute_backfill_iteration = throttled(
            backfill_daemon.execute_backfill_iteration, full_every=original
        )
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds
    return original


def throttled(evaluate, full_every: float, clock=time.monotonic):
    """`evaluate` (Dagster's execute_backfill_iteration), run only when a backfill is new or
    newly canceling since the last run of it, or `full_every` seconds have passed."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    statuses = [BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING]
    state: dict = {"last": None, "seen": frozenset()}

    def execute_backfill_iteration(workspace_process_context, logger, *args, **kwargs):
        instance = workspace_process_context.instance
        pending = frozenset(
            (backfill.backfill_id, backfill.status)
            for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=statuses))
        )
        now = clock()
        if (
            state["last"] is not None
            and pending <= state["seen"]
            and now - state["last"] < full_every
        ):
            yield None
            return
        state["last"], state["seen"] = now, pending
        yield from evaluate(workspace_process_context, logger, *args, **kwargs)

    execute_backfill_iteration.usage_etl_throttled = True
    return execute_backfill_iteration


def main(argv: Sequence[str] | None = None) -> None:
    try:
        seconds = DaemonSettings().daemon_interval_seconds
    except SettingsError as exc:
        raise SystemExit(f"usage_etl.daemon: {exc}") from None
    apply_interval(seconds)
    from dagster._daemon.cli import cli

    args = list(sys.argv[1:] if argv is None else argv)
    cli.main(args=args, prog_name="usage-etl-daemon", obj={})


if __name__ == "__main__":
    main()
