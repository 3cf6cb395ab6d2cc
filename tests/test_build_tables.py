"""Build tables for REPLACE PARTITION: plain copies, and plain MergeTree for replicated targets."""

from __future__ import annotations

from datetime import date

import pytest

from usage_etl.warehouse.build_tables import build_table_ddl, create_build_table
from usage_etl.warehouse.client import WarehouseError

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
    with pytest.raises(WarehouseError, match="does not exist"):
        create_build_table(warehouse, "_build_x", "no_such_table")
