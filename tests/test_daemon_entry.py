"""The project's daemon entry point (usage_etl/daemon.py) shortens the backfill daemon's loop.

An upgrade guard first: Dagster 1.13's backfill loop sleeps
`dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS` (read when the loop starts). If a
Dagster upgrade stops reading it that way, the wrapper silently stops working and backfills wait
30 s again: the first test fails then. The others prove the wrapper applies the setting, keeps
the AssetDaemon on Dagster's default, and rejects a bad value."""

from __future__ import annotations

import threading

import pytest
from dagster import DagsterInstance
from dagster._daemon import backfill as backfill_daemon
from dagster._daemon import controller
from dagster._daemon.asset_daemon import AssetDaemon
from dagster._daemon.daemon import BackfillDaemon

from usage_etl import daemon


class RecordingEvent(threading.Event):
    """A shutdown event whose waits return at once and are recorded."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return False


@pytest.fixture
def restore_controller(monkeypatch):
    # monkeypatch puts Dagster's module attributes back after the test.
    monkeypatch.setattr(
        controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", controller.DEFAULT_DAEMON_INTERVAL_SECONDS
    )
    monkeypatch.setattr(controller, "create_daemon_of_type", controller.create_daemon_of_type)
    monkeypatch.setattr(
        backfill_daemon, "execute_backfill_iteration", backfill_daemon.execute_backfill_iteration
    )


def backfill_loop_sleeps(monkeypatch) -> list[float]:
    """Two iterations of Dagster's backfill loop with no backfills: what it sleeps after each."""
    monkeypatch.setattr(backfill_daemon, "execute_backfill_iteration", lambda *a, **k: iter(()))
    event = RecordingEvent()
    loop = backfill_daemon.execute_backfill_iteration_loop(
        workspace_process_context=None, logger=None, shutdown_event=event
    )
    for _ in range(6):  # START_SPAN, END_SPAN, None per iteration
        next(loop)
    loop.close()
    return event.waits


def test_dagsters_backfill_loop_sleeps_the_controller_constant(monkeypatch, restore_controller):
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 30  # Dagster 1.13's value
    assert all(29 < wait <= 30 for wait in backfill_loop_sleeps(monkeypatch))
    monkeypatch.setattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", 0.25)
    waits = backfill_loop_sleeps(monkeypatch)
    assert len(waits) == 2 and all(0.2 < wait <= 0.25 for wait in waits), waits


def test_the_wrapper_applies_the_setting(monkeypatch, restore_controller):
    monkeypatch.setenv("USAGE_ETL_DAEMON_INTERVAL_SECONDS", "1.5")
    ran = []
    monkeypatch.setattr("dagster._daemon.cli.cli.main", lambda **kw: ran.append(kw["args"]))
    daemon.main(["run", "-m", "usage_etl.definitions"])
    assert ran == [["run", "-m", "usage_etl.definitions"]]
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 1.5
    assert all(1.4 < wait <= 1.5 for wait in backfill_loop_sleeps(monkeypatch))


def test_the_default_is_two_seconds(monkeypatch, restore_controller):
    monkeypatch.delenv("USAGE_ETL_DAEMON_INTERVAL_SECONDS", raising=False)
    monkeypatch.setattr("dagster._daemon.cli.cli.main", lambda **kw: None)
    daemon.main(["run"])
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 2.0


def test_a_bad_value_names_the_setting(monkeypatch, restore_controller):
    monkeypatch.setenv("USAGE_ETL_DAEMON_INTERVAL_SECONDS", "0")
    with pytest.raises(SystemExit, match="INTERVAL_SECONDS: Input should be greater than 0"):
        daemon.main(["run"])
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 30


def test_the_asset_daemon_keeps_dagsters_interval(restore_controller):
    assert daemon.apply_interval(2.0) == 30
    assert daemon.apply_interval(3.0) == 30  # applying twice keeps Dagster's own default
    with DagsterInstance.ephemeral() as instance:
        assert instance.auto_materialize_minimum_interval_seconds is None
        asset_daemon = controller.create_daemon_of_type(AssetDaemon.daemon_type(), instance)
        assert asset_daemon._pre_sensor_interval_seconds == 30
        backfill = controller.create_daemon_of_type(BackfillDaemon.daemon_type(), instance)
        assert isinstance(backfill, BackfillDaemon)


def test_a_running_backfill_is_evaluated_at_dagsters_pace_a_new_one_at_once(restore_controller):
    """The short loop is for picking up new backfills; one in progress is evaluated every 30 s
    (Dagster's pace), a new or newly canceling one at the next 2 s iteration."""
    from types import SimpleNamespace

    from dagster._core.execution.backfill import BulkActionStatus

    backfills: list = []
    context = SimpleNamespace(
        instance=SimpleNamespace(get_backfills=lambda filters: list(backfills))
    )
    evaluated: list[float] = []
    now = [1000.0]

    def evaluate(workspace_process_context, logger, **kwargs):
        evaluated.append(now[0])
        yield None

    iteration = daemon.throttled(evaluate, full_every=30, clock=lambda: now[0])

    def tick(seconds: float = 2.0) -> None:
        now[0] += seconds
        list(iteration(context, None))

    tick()  # the first iteration evaluates (as Dagster's would)
    tick()
    assert len(evaluated) == 1
    backfills.append(SimpleNamespace(backfill_id="a", status=BulkActionStatus.REQUESTED))
    tick()
    assert len(evaluated) == 2  # a new backfill: at once
    for _ in range(10):
        tick()
    assert len(evaluated) == 2  # in progress: not every 2 s
    tick(10)
    assert len(evaluated) == 3  # 30 s after the last evaluation
    backfills[0] = SimpleNamespace(backfill_id="a", status=BulkActionStatus.CANCELING)
    tick()
    assert len(evaluated) == 4  # a cancel request: at once
    backfills.clear()
    tick()
    assert len(evaluated) == 4


def test_the_wrapper_throttles_dagsters_iteration(monkeypatch, restore_controller):
    original = backfill_daemon.execute_backfill_iteration
    daemon.apply_interval(2.0)
    daemon.apply_interval(2.0)
    wrapped = backfill_daemon.execute_backfill_iteration
    assert wrapped is not original and wrapped.usage_etl_throttled
