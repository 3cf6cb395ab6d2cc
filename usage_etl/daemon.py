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
iteration evaluates only when a backfill is new (or newly canceling), or one of its runs
finished, since the last evaluation, or Dagster's own 30 s have passed; otherwise it is the
query of the bulk-actions table (and a count of each pending backfill's finished runs) that
finds nothing new. tests/test_daemon_entry.py fails if Dagster stops reading the constant or
looking the iteration up this way (docs/performance.md, "Session 9 (2026-12-01): backfills").

The workspace is reloaded when the code changes, not every minute. Dagster's daemon
controller, every `RELOAD_WORKSPACE_INTERVAL` (60 s), drops its code server and starts a new
one (`dagster api grpc`: imports and loads the definitions, ~2-4 CPU-s) and fetches the whole
repository snapshot again, so a changed file reaches the sensors and the next launched run
within a minute. The old server lives on while it holds a run. Over a 24-minute backfill that was
~24 code-server starts on the cores the run needs (docs/performance.md, "Session 10
(2026-12-01): the backfill path"). `check_workspace_freshness` is wrapped: at Dagster's pace it
still looks, but reloads only if a file of the project (`usage_etl/`, `config/`, `sql/`,
`workspace.yaml`, `pyproject.toml`, `uv.lock`: names, sizes and mtimes) changed, a code location
has a load error or its server does not answer a ping, or `FULL_RELOAD_SECONDS` passed
since the last reload; otherwise nothing is reloaded and the current server keeps serving.

The run queue's iteration (1 s) is skipped when no run is QUEUED (`skip_when_nothing_queued`):
what it would have found is nothing to dequeue.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from usage_etl.settings import REPO_ROOT, DaemonSettings, SettingsError

# A reload at least this often even when nothing seems changed (a dependency upgraded in
# place, code outside the fingerprinted folders): Dagster's own cost, once per 15 minutes.
FULL_RELOAD_SECONDS = 900.0
CODE_PATHS = ("usage_etl", "config", "sql", "workspace.yaml", "pyproject.toml", "uv.lock")


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
    reload_on_change(controller.DagsterDaemonController)
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    skip_when_nothing_queued(QueuedRunCoordinatorDaemon)
    return original


def skip_when_nothing_queued(daemon_class) -> None:
    """Wrap the run queue daemon's iteration (every `dequeue_interval_seconds`, 1 s here) so
    that it first counts the QUEUED runs (one indexed COUNT) and does nothing when there are
    none. Dagster's iteration reads the in-progress runs and the queued runs (and the pools'
    limits) before finding nothing to dequeue: ~15 ms of daemon CPU a second, most of the run
    queue's cost while a backfill's run is in progress and nothing waits."""
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

    run_iteration = daemon_class.run_iteration
    if getattr(run_iteration, "usage_etl_skips_empty", False):
        return
    queued = RunsFilter(statuses=[DagsterRunStatus.QUEUED])

    def skipping_run_iteration(self, workspace_process_context, fixed_iteration_time=None):
        if not workspace_process_context.instance.get_runs_count(filters=queued):
            return
        yield from run_iteration(self, workspace_process_context, fixed_iteration_time)

    skipping_run_iteration.usage_etl_skips_empty = True
    daemon_class.run_iteration = skipping_run_iteration


def code_fingerprint(root: Path = REPO_ROOT, paths: Sequence[str] = CODE_PATHS) -> tuple:
    """(relative path, size, mtime_ns) of every file under `paths` (no __pycache__): changes
    when a file is edited, added, removed or replaced (a deploy, a git checkout)."""
    entries = []
    for name in paths:
        top = root / name
        if top.is_file():
            stat = top.stat()
            entries.append((name, stat.st_size, stat.st_mtime_ns))
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(files):
                path = Path(folder, file)
                try:
                    stat = path.stat()
                except OSError:  # removed while walking: the next look sees it gone
                    continue
                entries.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def locations_healthy(workspace_process_context) -> bool:
    """Every code location loaded, and every gRPC one's server answers a ping."""
    entries = workspace_process_context.get_current_workspace().code_location_entries
    for entry in entries.values():
        location = entry.code_location
        if entry.load_error is not None or location is None:
            return False
        client = getattr(location, "client", None)
        if client is not None:
            try:
                client.ping("usage_etl.daemon")
            except Exception:
                return False
    return True


def reload_on_change(
    controller_class,
    fingerprint: Callable[[], tuple] = code_fingerprint,
    full_every: float = FULL_RELOAD_SECONDS,
    clock: Callable[[], float] = time.time,
) -> None:
    """Wrap `controller_class.check_workspace_freshness` (Dagster's 60 s workspace reload) so
    that it reloads only when `fingerprint()` changed since the last reload, a location is
    unhealthy, or `full_every` seconds passed; otherwise it counts as fresh."""
    from dagster._daemon import controller

    check = controller_class.check_workspace_freshness
    if getattr(check, "usage_etl_on_change", False):
        return
    state = {"fingerprint": fingerprint(), "reloaded": clock()}

    def check_workspace_freshness(self, last_workspace_update_time: float) -> float:
        now = clock()
        if now - last_workspace_update_time <= controller.RELOAD_WORKSPACE_INTERVAL:
            return last_workspace_update_time
        current = fingerprint()
        if (
            current == state["fingerprint"]
            and now - state["reloaded"] < full_every
            and locations_healthy(self._workspace_process_context)
        ):
            return now  # nothing to reload: look again in RELOAD_WORKSPACE_INTERVAL
        updated = check(self, last_workspace_update_time)
        if updated != last_workspace_update_time:  # reloaded (Dagster keeps the old on error)
            state["fingerprint"], state["reloaded"] = current, clock()
        return updated

    check_workspace_freshness.usage_etl_on_change = True
    controller_class.check_workspace_freshness = check_workspace_freshness


def throttled(evaluate, full_every: float, clock=time.monotonic):
    """`evaluate` (Dagster's execute_backfill_iteration), run only when a backfill is new or
    newly canceling, or one of its runs finished, since the last run of it, or `full_every`
    seconds have passed. A finished run is what lets a backfill complete (or launch its next
    runs): evaluated at once, a one-run backfill shows as complete ~2 s after its run ends
    instead of up to 30 s (one indexed count of the backfill's finished runs per iteration)."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
    from dagster._core.storage.dagster_run import FINISHED_STATUSES, RunsFilter
    from dagster._core.storage.tags import BACKFILL_ID_TAG

    statuses = [BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING]
    state: dict = {"last": None, "seen": frozenset()}

    def finished_runs(instance, backfill_id: str) -> int:
        return instance.get_runs_count(
            RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}, statuses=FINISHED_STATUSES)
        )

    def execute_backfill_iteration(workspace_process_context, logger, *args, **kwargs):
        instance = workspace_process_context.instance
        pending = frozenset(
            (backfill.backfill_id, backfill.status, finished_runs(instance, backfill.backfill_id))
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
