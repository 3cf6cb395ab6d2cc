"""Build tables for atomic `REPLACE PARTITION` publishes, safe on replicated clusters.

Publishing computes a day (or a billing period) into a build table of the run's own, then swaps
it into the target with `ALTER TABLE target REPLACE PARTITION p FROM build`. ClickHouse requires
both tables to have the same columns, partition key, sorting key, primary key and storage
policy; the engines may differ (a plain MergeTree source into a ReplicatedMergeTree target is
fine, and the target replicates the new parts to its other replicas).

`CREATE TABLE build AS target` copies the target's engine *with its arguments*. For a
ReplicatedMergeTree that is its ZooKeeper path: the build table would register as another
replica of the target (`REPLICA_ALREADY_EXISTS`), or be refused outright when the path holds the
`{uuid}` macro outside an ON CLUSTER query. So when the target is replicated, the build table is
created with a plain, node-local MergeTree of identical structure and keys instead. It is never
created ON CLUSTER: only the node that runs the publish needs it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from usage_etl.warehouse.client import Warehouse, WarehouseError

# Key expressions as system.tables reports them for our DDL: identifiers, calls, commas.
_KEY_EXPRESSION = re.compile(r"^[A-Za-z0-9_, ()]*$")


def build_table_ddl(
    warehouse: Warehouse,
    build: str,
    target: str,
    engine: str,
    partition_key: str,
    sorting_key: str,
    primary_key: str,
) -> str:
    """The CREATE statement of a build table for `target`, given the target's catalog entry."""
    statement = f"CREATE TABLE {warehouse.table(build)} AS {warehouse.table(target)}"
    if not engine.startswith("Replicated"):
        return statement
    if engine != "ReplicatedMergeTree":  # engines with parameters would need them copied too
        raise WarehouseError(f"no build table for {target}: unsupported engine {engine}")
    keys = {"partition": partition_key, "sorting": sorting_key, "primary": primary_key}
    for name, expression in keys.items():
        if not _KEY_EXPRESSION.match(expression):
            raise WarehouseError(f"unexpected {name} key of {target}: {expression!r}")
    partition = f" PARTITION BY {partition_key}" if partition_key else ""
    return (
        f"{statement} ENGINE = MergeTree{partition} ORDER BY ({sorting_key or 'tuple()'}) "
        f"PRIMARY KEY ({primary_key or 'tuple()'})"
    )


# Build and work tables are written, read once and dropped within a run: merging their parts
# is wasted work, and on the embedded engine it runs inside the run's process, where a merge of
# the hourly build table overlapped the next bucket's GROUP BY and raised the run's peak RSS by
# ~0.1 GiB (docs/performance.md, session 6). No two parts are small enough to merge under these.
NO_MERGE_SETTINGS = (
    "max_bytes_to_merge_at_max_space_in_pool = 1, max_bytes_to_merge_at_min_space_in_pool = 1"
)


def create_build_tables(warehouse: Warehouse, pairs: Sequence[tuple[str, str]]) -> None:
    """Create each (build, target) pair's build table so it can REPLACE PARTITION into its
    target (`build_table_ddl`: a plain MergeTree of the same structure if the target is
    replicated), replacing any a killed attempt left, never merging in the background
    (NO_MERGE_SETTINGS, part of the CREATE): one catalog read for all of them and one statement
    per table (a small day's publish is mostly per-statement cost)."""
    rows = warehouse.query_rows(
        "SELECT name, engine, partition_key, sorting_key, primary_key FROM system.tables "
        "WHERE database = {database:String} AND name IN {names:Array(String)}",
        {"database": warehouse.database, "names": [target for _, target in pairs]},
    )
    catalog = {row[0]: row[1:] for row in rows}
    for build, target in pairs:
        if target not in catalog:
            raise WarehouseError(f"table {warehouse.table(target)} does not exist; run migrations")
        ddl = build_table_ddl(warehouse, build, target, *catalog[target])
        ddl = ddl.replace("CREATE TABLE", "CREATE OR REPLACE TABLE", 1)
        warehouse.command(f"{ddl} SETTINGS {NO_MERGE_SETTINGS}")


def create_build_table(warehouse: Warehouse, build: str, target: str) -> None:
    """`create_build_tables` for one table."""
    create_build_tables(warehouse, ((build, target),))


# Every table a publish builds and drops again (build tables and work tables) is named with this
# prefix, so a sweep can find those a killed run left behind.
BUILD_PREFIX = "_build_"
# ... and invoice builds were named `invoice_line_items_build_<16 hex>` before it (2026-11-30).
BUILD_TABLE_NAME = rf"^({BUILD_PREFIX}.+|invoice_line_items_build_[0-9a-f]{{16}})$"
# A run killed hard (OOM, SIGKILL) leaves its build tables behind. None is older than a run may
# live (dagster.yaml stops runs after 2 h), so anything a day old belongs to no live run.
STALE_BUILD_TABLE_SECONDS = 24 * 3600


def drop_build_tables(warehouse: Warehouse, *names: str) -> None:
    """Drop these tables of the warehouse's database (build, work or staging tables) if they
    exist, in one statement.

    SYNC: their parts are removed now. Without it an Atomic database only marks a table
    dropped and removes it 8 minutes later, which a run process never lives to see: each
    later engine open re-loads every marked table (~2 ms each: a 31-day backfill left 62,
    +0.1 s on the next run's open) until a process alive 8 minutes after the drop removes
    them, and their parts stay on disk until then."""
    if names:
        tables = ", ".join(warehouse.table(name) for name in names)
        warehouse.command(f"DROP TABLE IF EXISTS {tables} SYNC")


def drop_stale_build_tables(
    warehouse: Warehouse, older_than_seconds: int | None = None
) -> list[str]:
    """Drop the build tables created more than `older_than_seconds` (default a day) ago; returns
    their names. On a cluster each node's own: build tables are node-local."""
    if older_than_seconds is None:
        older_than_seconds = STALE_BUILD_TABLE_SECONDS
    stale = [
        name
        for (name,) in warehouse.query_rows(
            "SELECT name FROM system.tables WHERE database = {database:String} "
            "AND match(name, {pattern:String}) "
            "AND metadata_modification_time <= now() - {age:UInt32} ORDER BY name",
            {
                "database": warehouse.database,
                "pattern": BUILD_TABLE_NAME,
                "age": older_than_seconds,
            },
        )
    ]
    drop_build_tables(warehouse, *stale)
    return stale
