"""The development instance's storage (dagster_home/dagster.yaml, usage_etl/instance_storage.py):
Dagster's SQLite files, with the event log's connections kept open. What a run writes is read by
another process's instance, a live watcher (the webserver's way of following a run) sees each
new event, and disposing the instance leaves no WAL behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import dagster as dg
import pytest

from usage_etl.instance import _uses_sqlite, instance_problems, prepare_instance
from usage_etl.instance_storage import OpenShardsSqliteEventLogStorage
from usage_etl.settings import REPO_ROOT


@dg.asset
def tiny() -> int:
    return 1


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_instance_is_prepared_and_checked_like_dagsters_sqlite(home):
    assert prepare_instance(home)
    assert _uses_sqlite(home)  # so the doctor checks its SQLite files
    assert instance_problems(home) == []
    for relative in ("history/runs.db", "history/runs/index.db", "schedules/schedules.db"):
        assert (home / relative).exists(), relative


def test_events_are_read_elsewhere_watched_live_and_no_wal_is_left(home):
    prepare_instance(home)
    with dg.DagsterInstance.get() as writer, dg.DagsterInstance.from_config(str(home)) as reader:
        storage = writer.event_log_storage
        assert isinstance(storage, OpenShardsSqliteEventLogStorage)
        result = dg.materialize([tiny], instance=writer)
        assert result.success
        run_id = result.run_id
        written = writer.all_logs(run_id)
        assert [e.dagster_event_type for e in reader.all_logs(run_id)] == [
            e.dagster_event_type for e in written
        ]
        shard = Path(storage.path_for_shard(run_id))
        assert shard.with_name(shard.name + "-wal").exists()  # the connection is still open

        # The webserver follows a run by watching its database file.
        seen = threading.Event()

        def callback(event, _cursor):
            if event.message == "after the run":
                seen.set()

        reader.watch_event_logs(run_id, None, callback)
        run = writer.get_run_by_id(run_id)
        writer.report_engine_event("after the run", run)
        assert seen.wait(30), "the watcher did not see the new event"
        assert reader.get_records_for_run(run_id).records[-1].event_log_entry.message == (
            "after the run"
        )
    assert not shard.with_name(shard.name + "-wal").exists()  # closed, checkpointed


def test_an_instance_opened_from_its_folder_keeps_its_event_log_there(home, tmp_path, monkeypatch):
    """`DagsterInstance.from_config(folder)` with DAGSTER_HOME elsewhere, as Dagster's default."""
    prepare_instance(home)
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(other))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = dg.materialize([tiny], instance=instance).run_id
        shard = Path(instance.event_log_storage.path_for_shard(run_id))
    assert shard.parent == home / "history" / "runs"
    assert not list(other.iterdir())


WRITER = """
import dagster as dg
with dg.DagsterInstance.get() as instance:
    run = instance.get_run_by_id({run_id!r})
    for i in range(5):
        instance.report_engine_event(f"event {{i}}", run)
"""


def test_a_watcher_sees_every_event_another_process_writes(home):
    """The webserver (watcher) and a run worker (writer) are different processes."""
    prepare_instance(home)
    with dg.DagsterInstance.get() as reader:
        run = reader.add_run(dg.DagsterRun(job_name="watched", run_id=str(uuid.uuid4())))
        seen: list[str] = []
        last = threading.Event()

        def callback(event, _cursor):
            seen.append(event.message)
            if event.message == "event 4":
                last.set()

        reader.watch_event_logs(run.run_id, None, callback)
        subprocess.run(
            [sys.executable, "-c", WRITER.format(run_id=run.run_id)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        assert last.wait(30), seen
        assert [m for m in seen if m.startswith("event ")] == [f"event {i}" for i in range(5)]
