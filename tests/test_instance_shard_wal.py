"""A run's new event-log shard is created in WAL mode before Dagster creates its schema (fewer
fsyncs than its rollback-journal commits), and is the same complete, stamped shard after."""

from __future__ import annotations

import sqlite3

import dagster as dg
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata

from usage_etl.instance_storage import OpenShardsSqliteEventLogStorage


@dg.asset
def tiny() -> int:
    return 1


def journal_mode(path: str) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_new_shard_gets_its_schema_in_wal_mode(tmp_path, monkeypatch):
    storage = OpenShardsSqliteEventLogStorage(base_dir=str(tmp_path))
    seen: list[str] = []
    create_all = SqlEventLogStorageMetadata.create_all

    def recording_create_all(bind, *args, **kwargs):
        database = bind.engine.url.database or ""
        if database.startswith(str(tmp_path)):  # this storage's shards, not in-memory ones
            seen.append(journal_mode(database))
        return create_all(bind, *args, **kwargs)

    monkeypatch.setattr(SqlEventLogStorageMetadata, "create_all", recording_create_all)
    with dg.DagsterInstance.ephemeral() as instance:
        instance._event_storage = storage  # the storage under test
        storage.register_instance(instance)
        result = dg.materialize([tiny], instance=instance)
    assert result.success
    shard = storage.path_for_shard(result.run_id)
    assert seen and seen[-1] == "wal", seen
    assert journal_mode(shard) == "wal"
    with sqlite3.connect(shard) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        stamped = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"event_logs", "alembic_version"} <= tables and stamped
    assert [e.dagster_event_type for e in storage.get_logs_for_run(result.run_id)]
    storage.dispose()
