"""A run's new event-log shard (usage_etl/instance_storage.py): a copy of a template that
Dagster's own setup made in WAL mode and stamped at its head revision, so it is the same
complete, stamped shard Dagster makes, in WAL mode (fewer fsyncs than rollback-journal
commits), without loading Alembic's revision map for every run. What the template cannot
answer (no template, another revision, a shard created meanwhile) takes Dagster's own path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from usage_etl.instance_storage import OpenShardsSqliteEventLogStorage, _copy_new


@dg.asset
def tiny() -> int:
    return 1


def journal_mode(path: str) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


def schema(path: str) -> tuple[list, list]:
    with sqlite3.connect(path) as connection:
        objects = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        stamped = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return objects, stamped


def materialize_into(storage) -> str:
    with dg.DagsterInstance.ephemeral() as instance:
        instance._event_storage = storage  # the storage under test
        storage.register_instance(instance)
        result = dg.materialize([tiny], instance=instance)
    assert result.success
    assert [e.dagster_event_type for e in storage.get_logs_for_run(result.run_id)]
    return result.run_id


def counting_initdb(storage, monkeypatch) -> list[str]:
    """The databases Dagster's own `_initdb` sets up from now on."""
    calls: list[str] = []
    initdb = storage._initdb

    def recording(engine, *args, **kwargs):
        calls.append(Path(engine.url.database).name)
        return initdb(engine, *args, **kwargs)

    monkeypatch.setattr(storage, "_initdb", recording)
    return calls


def one_run_then_reopened(base: str, monkeypatch, between=lambda path: None):
    """A run stored by one storage, then the same folder opened by another (a later process),
    whose calls of Dagster's own `_initdb` are recorded; `between(shard)` runs in between."""
    first = OpenShardsSqliteEventLogStorage(base_dir=base)
    run_id = materialize_into(first)
    first.dispose()
    between(first.path_for_shard(run_id))
    second = OpenShardsSqliteEventLogStorage(base_dir=base)
    return run_id, second, counting_initdb(second, monkeypatch)


def test_a_new_shard_is_dagsters_own_schema_in_wal_mode(tmp_path):
    ours = OpenShardsSqliteEventLogStorage(base_dir=str(tmp_path / "ours"))
    run_id = materialize_into(ours)
    dagsters = SqliteEventLogStorage(base_dir=str(tmp_path / "dagster"))
    reference = materialize_into(dagsters)
    shard = ours.path_for_shard(run_id)
    assert journal_mode(shard) == "wal"
    assert schema(shard) == schema(dagsters.path_for_shard(reference))
    (template,) = (tmp_path / "ours").glob(".shard-template-*")
    assert schema(str(template)) == schema(shard)
    assert ours.get_all_run_ids() == [run_id]  # the template is no run
    ours.dispose()
    dagsters.dispose()


def test_later_shards_skip_dagsters_setup_and_keep_their_events(tmp_path, monkeypatch):
    # Another process's storage: the index and the earlier run's shard are at the template's
    # revision, and its own run's shard is a copy of the template.
    earlier, second, calls = one_run_then_reopened(str(tmp_path), monkeypatch)
    later = materialize_into(second)
    assert [e.dagster_event_type for e in second.get_logs_for_run(earlier)]
    assert calls == []
    assert sorted(second.get_all_run_ids()) == sorted([earlier, later])
    second.dispose()


def test_a_shard_at_another_revision_takes_dagsters_own_setup(tmp_path, monkeypatch):
    def older(shard: str) -> None:
        with sqlite3.connect(shard) as connection:
            connection.execute("UPDATE alembic_version SET version_num = 'older'")

    run_id, second, calls = one_run_then_reopened(str(tmp_path), monkeypatch, older)
    assert [e.dagster_event_type for e in second.get_logs_for_run(run_id)]
    assert calls == [f"{run_id}.db"]
    second.dispose()


def test_without_a_usable_template_every_shard_is_set_up_by_dagster(tmp_path, monkeypatch):
    base = tmp_path / "runs"
    base.mkdir()
    probe = OpenShardsSqliteEventLogStorage.__new__(OpenShardsSqliteEventLogStorage)
    probe._base_dir = str(base)
    Path(probe._template_path()).mkdir()  # the template cannot be put in place
    storage = OpenShardsSqliteEventLogStorage(base_dir=str(base))
    calls = counting_initdb(storage, monkeypatch)
    run_id = materialize_into(storage)
    assert calls == [f"{run_id}.db"]
    assert journal_mode(storage.path_for_shard(run_id)) == "wal"
    assert [p.name for p in base.glob("*.tmp")] == []  # no partial template left
    storage.dispose()


def test_a_copy_never_replaces_a_shard_that_exists(tmp_path):
    template = tmp_path / "template.sqlite"
    template.write_bytes(b"template")
    shard = tmp_path / "run.db"
    shard.write_bytes(b"events another process wrote")
    assert not _copy_new(str(template), str(shard))
    assert shard.read_bytes() == b"events another process wrote"
    assert _copy_new(str(template), str(tmp_path / "new.db"))
    assert (tmp_path / "new.db").read_bytes() == b"template"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db", "run.db", "template.sqlite"]
