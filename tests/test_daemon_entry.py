"""The project's daemon entry point (usage_etl/daemon.py) shortens the backfill daemon's loop.

An upgrade guard first: Dagster 1.13's backfill loop sleeps
`dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS` (read when the loop starts). If a
Dagster upgrade stops reading it that way, the wrapper silently stops working and backfills wait
30 s again: the first test fails then. The others prove the wrapper applies the setting, keeps
the AssetDaemon on Dagster's default, and rejects a bad value. The last ones guard the
workspace reload: Dagster's controller replaces its code server every 60 s; the wrapper
reloads only when the code changed, a location is unhealthy, or 15 minutes passed. And the run
queue's 1 s iteration is skipped while no run is queued."""

from __future__ import annotations

import logging
import threading

import pytest
from dagster import DagsterInstance
from dagster._daemon import backfill as backfill_daemon
from dagster._daemon import controller
from dagster._daemon.asset_daemon import AssetDaemon
from dagster._daemon.daemon import BackfillDaemon
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

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
    monkeypatch.setattr(
        controller.DagsterDaemonController,
        "check_workspace_freshness",
        controller.DagsterDaemonController.check_workspace_freshness,
    )
    monkeypatch.setattr(
        QueuedRunCoordinatorDaemon, "run_iteration", QueuedRunCoordinatorDaemon.run_iteration
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
    (Dagster's pace), a new or newly canceling one, or one whose run finished, at the next 2 s
    iteration."""
    from types import SimpleNamespace

    from dagster._core.execution.backfill import BulkActionStatus

    backfills: list = []
    finished = {"a": 0}
    context = SimpleNamespace(
        instance=SimpleNamespace(
            get_backfills=lambda filters: list(backfills),
            get_runs_count=lambda filters: finished[filters.tags["dagster/backfill"]],
        )
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
    finished["a"] = 1
    tick()
    assert len(evaluated) == 4  # one of its runs finished: at once (it may be complete now)
    tick()
    assert len(evaluated) == 4
    backfills[0] = SimpleNamespace(backfill_id="a", status=BulkActionStatus.CANCELING)
    tick()
    assert len(evaluated) == 5  # a cancel request: at once
    backfills.clear()
    tick()
    assert len(evaluated) == 5


def test_the_wrapper_throttles_dagsters_iteration(monkeypatch, restore_controller):
    original = backfill_daemon.execute_backfill_iteration
    daemon.apply_interval(2.0)
    daemon.apply_interval(2.0)
    wrapped = backfill_daemon.execute_backfill_iteration
    assert wrapped is not original and wrapped.usage_etl_throttled


class FakeLocation:
    def __init__(self):
        self.answers = True

        class Client:
            def ping(client, echo):
                if not self.answers:
                    raise ConnectionError("code server gone")
                return {"echo": echo}

        self.client = Client()


class FakeController:
    """What Dagster's `check_workspace_freshness` touches on the controller: the gRPC server
    registry and the workspace (whose entries the wrapper checks)."""

    check_workspace_freshness = controller.DagsterDaemonController.check_workspace_freshness

    def __init__(self):
        from types import SimpleNamespace

        self.reloads = 0
        self.fail_reload = False
        self.location = FakeLocation()
        self.entry = SimpleNamespace(load_error=None, code_location=self.location)
        fake = self

        class Registry:
            def clear_all_grpc_endpoints(self):
                pass

        class Context:
            def refresh_workspace(self):
                if fake.fail_reload:
                    raise RuntimeError("the code location does not load")
                fake.reloads += 1

            def get_current_workspace(self):
                return SimpleNamespace(code_location_entries={"usage_etl": fake.entry})

        self._grpc_server_registry = Registry()
        self._logger = logging.getLogger("test_daemon_entry")
        self._workspace_process_context = Context()


def test_dagsters_controller_replaces_the_code_server_every_minute(monkeypatch):
    """The upgrade guard: what the wrapper avoids is what Dagster 1.13 does."""
    assert controller.RELOAD_WORKSPACE_INTERVAL == 60
    fake = FakeController()
    now = controller.get_current_timestamp()
    assert fake.check_workspace_freshness(now - 30) == now - 30 and fake.reloads == 0
    assert fake.check_workspace_freshness(now - 61) > now - 1 and fake.reloads == 1
    cleared = []
    monkeypatch.setattr(fake._grpc_server_registry, "clear_all_grpc_endpoints",
                        lambda: cleared.append(True))  # fmt: skip
    fake.check_workspace_freshness(now - 61)
    assert cleared == [True] and fake.reloads == 2  # a new server process for every location


def test_the_workspace_is_reloaded_only_when_the_code_changed(monkeypatch):
    monkeypatch.setattr(FakeController, "check_workspace_freshness",
                        FakeController.check_workspace_freshness)  # fmt: skip
    code = ["v1"]
    now = [10_000.0]
    monkeypatch.setattr(controller, "get_current_timestamp", lambda: now[0])  # Dagster's clock
    daemon.reload_on_change(FakeController, lambda: tuple(code), full_every=900,
                            clock=lambda: now[0])  # fmt: skip
    fake = FakeController()
    last = now[0]

    def minute() -> float:
        now[0] += 61
        return fake.check_workspace_freshness(last)

    last = minute()
    assert fake.reloads == 0 and last == now[0]  # unchanged: counts as fresh, nothing reloaded
    now[0] += 30
    assert fake.check_workspace_freshness(last) == last  # within the minute: not even a look
    code[0] = "v2"
    last = minute()
    assert fake.reloads == 1  # a file changed: reloaded
    last = minute()
    assert fake.reloads == 1
    fake.location.answers = False
    last = minute()
    assert fake.reloads == 2  # the code server does not answer: reloaded
    fake.location.answers = True
    fake.entry.load_error = "SyntaxError"
    last = minute()
    assert fake.reloads == 3  # a location in error: reloaded (retried every minute)
    fake.entry.load_error = None
    for _ in range(13):
        last = minute()
    assert fake.reloads == 3
    last = minute()
    last = minute()
    assert fake.reloads == 4  # 15 minutes after the last reload: reloaded anyway
    code[0] = "v3"
    fake.fail_reload = True
    stale = minute()
    assert stale == last and fake.reloads == 4  # Dagster keeps the old workspace on error
    fake.fail_reload = False
    assert fake.check_workspace_freshness(stale) > stale and fake.reloads == 5  # and retries


def test_the_fingerprint_follows_edits_additions_and_removals(tmp_path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")

    def fingerprint():
        return daemon.code_fingerprint(tmp_path, ("pkg", "pyproject.toml", "missing"))

    first = fingerprint()
    assert [entry[0] for entry in first] == ["pkg/a.py", "pyproject.toml"]
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    assert fingerprint() == first  # compiled files are not code changes
    (tmp_path / "pkg" / "a.py").write_text("A = 22\n")
    edited = fingerprint()
    assert edited != first
    (tmp_path / "pkg" / "b.py").write_text("")
    added = fingerprint()
    assert added != edited
    (tmp_path / "pkg" / "b.py").unlink()
    assert fingerprint() == edited


def test_the_wrapper_installs_the_reload_on_change(restore_controller):
    original = controller.DagsterDaemonController.check_workspace_freshness
    daemon.apply_interval(2.0)
    daemon.apply_interval(2.0)
    wrapped = controller.DagsterDaemonController.check_workspace_freshness
    assert wrapped is not original and wrapped.usage_etl_on_change
    assert any(path == "usage_etl/daemon.py" for path, *_ in daemon.code_fingerprint())


def test_the_run_queue_is_skipped_while_nothing_is_queued(monkeypatch, restore_controller):
    from types import SimpleNamespace

    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test, instance_for_test

    iterations = []

    def dagsters_iteration(self, workspace_process_context, fixed_iteration_time=None):
        iterations.append(fixed_iteration_time)
        yield None

    monkeypatch.setattr(QueuedRunCoordinatorDaemon, "run_iteration", dagsters_iteration)
    daemon.skip_when_nothing_queued(QueuedRunCoordinatorDaemon)
    daemon.skip_when_nothing_queued(QueuedRunCoordinatorDaemon)  # once only
    queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
    with instance_for_test() as instance:
        context = SimpleNamespace(instance=instance)
        create_run_for_test(instance, job_name="daily_usage", status=DagsterRunStatus.STARTED)
        assert list(queue.run_iteration(context)) == [] and iterations == []
        # A queued run (the status a submitted run has until the queue launches it).
        location = RegisteredCodeLocationOrigin("usage_etl.definitions")
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "daily_usage")
        create_run_for_test(instance, job_name="daily_usage", status=DagsterRunStatus.QUEUED,
                            remote_job_origin=origin)  # fmt: skip
        assert list(queue.run_iteration(context)) == [None] and iterations == [None]


def test_dagsters_interval_loop_calls_the_patched_run_iteration(monkeypatch, restore_controller):
    """The upgrade guard: Dagster's loop looks `run_iteration` up on the daemon's class (so the
    wrapper is what runs) and the controller builds this class for the run queue."""
    calls = []

    def recording(self, workspace_process_context, fixed_iteration_time=None):
        calls.append(workspace_process_context)
        yield None

    monkeypatch.setattr(QueuedRunCoordinatorDaemon, "run_iteration", recording)
    daemon.apply_interval(2.0)
    from dagster._core.test_utils import instance_for_test

    queued = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    with instance_for_test(overrides={"run_coordinator": queued}) as instance:
        queue = controller.create_daemon_of_type("QUEUED_RUN_COORDINATOR", instance)
    assert type(queue) is QueuedRunCoordinatorDaemon
    assert QueuedRunCoordinatorDaemon.run_iteration.usage_etl_skips_empty
    context = type("Context", (), {"instance": None})()
    calls_before = len(calls)
    context.instance = type("Instance", (), {"get_runs_count": lambda self, filters: 1})()
    loop = queue.core_loop(context, RecordingEvent())
    for _ in range(3):
        next(loop)
    loop.close()
    assert calls[calls_before:] == [context]  # counted one queued run, so Dagster's ran
