"""The production instance's storages (usage_etl/pg_instance_storage.py): dagster-postgres'
event log, run and schedule storages with their connections kept open per process. Every event
is stored and indexed as before; a run no longer opens a connection per statement; a
connection the server dropped while idle is replaced, not a failed write."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from usage_etl import pg_instance_storage
from usage_etl.pg_instance_storage import (
    KeptOpenPostgresEventLogStorage,
    KeptOpenPostgresRunStorage,
    KeptOpenPostgresScheduleStorage,
)

REPO = Path(__file__).resolve().parents[1]
KEYS = [dg.AssetKey(f"kept_open_{i}") for i in range(6)]


@dg.multi_asset(specs=[dg.AssetSpec(k) for k in KEYS])
def many_assets():
    for key in KEYS:
        yield dg.MaterializeResult(asset_key=key, metadata={"rows": 1})


@dg.asset_check(asset=KEYS[0])
def kept_open_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@pytest.fixture
def pg_instance(postgres_server, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (REPO / "dagster_home" / "dagster.postgres.yaml").read_text()
    )
    for key, value in postgres_server.env().items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _connects(engine) -> list[int]:
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    return opened


def test_a_run_stores_every_event_through_one_connection(pg_instance):
    storage = pg_instance.event_log_storage
    assert isinstance(storage, KeptOpenPostgresEventLogStorage)
    assert isinstance(pg_instance.run_storage, KeptOpenPostgresRunStorage)
    assert isinstance(pg_instance.schedule_storage, KeptOpenPostgresScheduleStorage)
    opened = _connects(storage._engine)
    runs_opened = _connects(pg_instance.run_storage._engine)
    result = dg.materialize([many_assets, kept_open_check], instance=pg_instance)
    assert result.success
    records = pg_instance.all_logs(result.run_id)
    assert len(records) >= 20
    # Dagster's own NullPool opened ~2 connections per stored event, ~10 for the run's record.
    assert len(opened) <= 2, len(opened)
    assert len(runs_opened) <= 2, len(runs_opened)
    assert pg_instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    for key in KEYS:  # stored and indexed as before
        latest = pg_instance.get_latest_materialization_event(key)
        assert latest is not None and latest.run_id == result.run_id
    check = pg_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [kept_open_check.check_key]
    )[kept_open_check.check_key]
    assert check.run_id == result.run_id


def test_an_idle_connection_the_server_dropped_is_replaced(pg_instance, monkeypatch):
    storage = pg_instance.event_log_storage
    first = dg.materialize([many_assets], instance=pg_instance)
    with storage._engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    # Kill the kept-open connection from another one (what a server restart does to it).
    with sa.create_engine(storage.postgres_url, poolclass=sa.pool.NullPool).connect() as other:
        assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar()
    monkeypatch.setattr(pg_instance_storage, "PING_IDLE_SECONDS", -1.0)  # it is idle now
    second = dg.materialize([many_assets], instance=pg_instance)
    assert second.success
    assert pg_instance.get_latest_materialization_event(KEYS[0]).run_id == second.run_id
    assert second.run_id != first.run_id


def test_schedule_storage_reads_and_writes_through_its_kept_connection(pg_instance):
    storage = pg_instance.schedule_storage
    opened = _connects(storage._engine)
    for _ in range(5):
        assert storage.all_instigator_state() is not None
    assert len(opened) <= 1
