"""Build tables for REPLACE PARTITION: plain copies, and plain MergeTree for replicated targets."""

from __future__ import annotations

from datetime import date

import pytest

from usage_etl.defs.resources import ClickHouseResource
from usage_etl.warehouse import build_tables
from usage_etl.warehouse.build_tables import (
    build_table_ddl,
    create_build_table,
    drop_stale_build_tables,
)
from usage_etl.warehouse.client import WarehouseError, open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

KEYS_SQL = (
    "SELECT engine, partition_key, sorting_key, primary_key FROM system.tables "
    "WHERE database = {db:String} AND name = {name:String}"
)


def catalog(warehouse, name: str) -> tuple:
    return warehouse.query_rows(KEYS_SQL, {"db": warehouse.database, "name": name})[0]


def test_a_replicated_target_gets_a_local_plain_mergetree_with_the_same_keys(warehouse):
    ddl = build_table_ddl(
        warehouse, "_build", "usage_daily", "ReplicatedMergeTree", "day", "account_id, day", "a"
    )
    db = warehouse.database
    assert ddl == (
        f"CREATE TABLE `{db}`.`_build` AS `{db}`.`usage_daily` ENGINE = MergeTree "
        "PARTITION BY day ORDER BY (account_id, day) PRIMARY KEY (a)"
    )
    assert "ON CLUSTER" not in ddl and "Replicated" not in ddl
    plain = build_table_ddl(warehouse, "_build", "usage_daily", "MergeTree", "day", "day", "day")
    assert plain == f"CREATE TABLE `{db}`.`_build` AS `{db}`.`usage_daily`"


@pytest.mark.parametrize(
    ("engine", "key"),
    [("ReplicatedMergeTree", "day; DROP TABLE x"), ("ReplicatedReplacingMergeTree", "day")],
)
def test_unexpected_keys_or_engines_are_refused(warehouse, engine, key):
    with pytest.raises(WarehouseError):
        build_table_ddl(warehouse, "_build", "usage_daily", engine, key, "day", "day")


def test_the_replicated_form_replaces_a_partition_of_the_real_target(warehouse):
    """Run the explicit-engine DDL (what a replicated target gets) against the real usage_daily:
    ClickHouse accepts the build table as a REPLACE PARTITION source only if its keys match."""
    _, partition_key, sorting_key, primary_key = catalog(warehouse, "usage_daily")
    warehouse.command(
        build_table_ddl(
            warehouse, "_build", "usage_daily", "ReplicatedMergeTree", partition_key,
            sorting_key, primary_key,
        )
    )  # fmt: skip
    assert catalog(warehouse, "_build")[0] == "MergeTree"
    row = [date(2026, 10, 5), "acme", "", "eu", "n1", "egress", "download", "xcode", "unknown"]
    columns = [
        "day", "account_id", "project_id", "region", "node_id", "direction", "operation",
        "artifact_kind", "network_path", "bytes", "request_count",
    ]  # fmt: skip
    warehouse.insert_rows("usage_daily", [[*row, 1, 1]], columns)
    warehouse.insert_rows("_build", [[*row, 7, 3]], columns)
    warehouse.command(
        f"ALTER TABLE {warehouse.table('usage_daily')} REPLACE PARTITION {{d:Date}} "
        f"FROM {warehouse.table('_build')}",
        {"d": date(2026, 10, 5)},
    )
    total = f"SELECT sum(bytes), sum(request_count) FROM {warehouse.table('usage_daily')}"
    assert warehouse.query_rows(total) == [(7, 3)]


def test_create_build_table_copies_a_plain_target(warehouse):
    create_build_table(warehouse, "_build_lines", "invoice_line_items")
    assert catalog(warehouse, "_build_lines")[1:] == catalog(warehouse, "invoice_line_items")[1:]
    # ... and, read once and dropped, never merges in the background.
    engine = warehouse.query_one(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": warehouse.database, "t": "_build_lines"},
    )
    assert "max_bytes_to_merge_at_max_space_in_pool = 1," in engine
    with pytest.raises(WarehouseError, match="does not exist"):
        create_build_table(warehouse, "_build_x", "no_such_table")


def _tables(warehouse) -> set[str]:
    rows = warehouse.query_rows(
        "SELECT name FROM system.tables WHERE database = {db:String}", {"db": warehouse.database}
    )
    return {name for (name,) in rows}


LEFT_BEHIND = (
    "_build_usage_daily_run1",
    "_build_winners_run1",
    "invoice_line_items_build_" + "ab12" * 4,
)
LOOK_ALIKES = ("my_build_notes", "invoice_line_items_build_notes", "usage_daily")


def _leave_build_tables(warehouse) -> None:
    for name in (*LEFT_BEHIND, *LOOK_ALIKES[:2]):
        warehouse.command(
            f"CREATE TABLE {warehouse.table(name)} (x UInt8) ENGINE = MergeTree ORDER BY x"
        )


def test_stale_build_tables_are_dropped_and_nothing_else(warehouse):
    _leave_build_tables(warehouse)
    assert drop_stale_build_tables(warehouse) == []  # created just now: may belong to a live run
    assert set(LEFT_BEHIND) <= _tables(warehouse)
    assert drop_stale_build_tables(warehouse, older_than_seconds=0) == sorted(LEFT_BEHIND)
    remaining = _tables(warehouse)
    assert not set(LEFT_BEHIND) & remaining and set(LOOK_ALIKES) <= remaining


def test_opening_the_warehouse_for_a_run_sweeps_stale_build_tables(settings, monkeypatch):
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        apply_migrations(warehouse, DdlOptions.from_settings(settings))
        _leave_build_tables(warehouse)
    monkeypatch.setattr(build_tables, "STALE_BUILD_TABLE_SECONDS", 0)
    resource = ClickHouseResource()
    try:
        remaining = _tables(resource.get_warehouse())
    finally:
        resource.get_warehouse().close()
    assert not set(LEFT_BEHIND) & remaining and set(LOOK_ALIKES) <= remaining
