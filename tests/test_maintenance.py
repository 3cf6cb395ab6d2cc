"""Compaction of settled days (warehouse_maintenance): it merges parts, never rows."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from usage_etl.maintenance.compaction import compact_settled_days
from usage_etl.settings import Settings
from usage_etl.warehouse.client import Warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

SETTLED = date(2026, 10, 1)
RECENT = date(2026, 10, 5)
SETTLED_BEFORE = date(2026, 10, 3)
# One INSERT writes one part of ~12 MiB: two add up to more than the 16 MiB cap of sql/006 and
# sql/011, so no background merge combines them behind the test's back; only compaction can.
PART_ROWS = 400_000
# A part of each compacted table: random ids, so the part does not compress below the cap.
PART_SQL = {
    "rollup_rows": "INSERT INTO {table} "
    "(day, event_id, account_id, bytes, request_count, source_key, source_etag, run_id) "
    "SELECT {{day:Date}}, hex(randomString(16)), 'acme', number, 1, 'k', 'e', 'r' "
    "FROM numbers({{rows:UInt32}})",
    "usage_hourly": "INSERT INTO {table} (day, hour, account_id, project_id, bytes, rollups) "
    "SELECT {{day:Date}}, toDateTime({{day:Date}}, 'UTC') + number % 24 * 3600, "
    "hex(randomString(8)), hex(randomString(8)), number, 1 FROM numbers({{rows:UInt32}})",
    "usage_daily": "INSERT INTO {table} (day, account_id, project_id, bytes, request_count) "
    "SELECT {{day:Date}}, hex(randomString(8)), hex(randomString(8)), number, 1 "
    "FROM numbers({{rows:UInt32}})",
}
# Per table, an order-free fingerprint of a day's rows: count and a sum of row hashes.
FINGERPRINT_SQL = {
    "rollup_rows": "count(), sum(cityHash64(event_id, bytes, load_key))",
    "usage_hourly": "count(), sum(cityHash64(hour, account_id, project_id, bytes))",
    "usage_daily": "count(), sum(cityHash64(account_id, project_id, bytes))",
}


def _insert_part(warehouse: Warehouse, day: date, table: str = "rollup_rows") -> None:
    warehouse.command(
        PART_SQL[table].format(table=warehouse.table(table)), {"day": day, "rows": PART_ROWS}
    )


def _parts(warehouse: Warehouse, day: date, table: str = "rollup_rows") -> int:
    return warehouse.query_one(
        "SELECT count() FROM system.parts WHERE database = {db:String} AND table = {t:String} "
        "AND active AND partition = {day:String}",
        {"db": warehouse.database, "t": table, "day": day.isoformat()},
    )


def _fingerprint(warehouse: Warehouse, day: date, table: str = "rollup_rows") -> tuple:
    return tuple(
        warehouse.query_rows(
            f"SELECT {FINGERPRINT_SQL[table]} FROM {warehouse.table(table)} "
            "WHERE day = {day:Date}",
            {"day": day},
        )[0]
    )


def _two_parts_per_day(warehouse: Warehouse, table: str = "rollup_rows") -> dict[date, tuple]:
    for day in (SETTLED, RECENT):
        _insert_part(warehouse, day, table)
        _insert_part(warehouse, day, table)
        assert _parts(warehouse, day, table) == 2
    return {day: _fingerprint(warehouse, day, table) for day in (SETTLED, RECENT)}


def test_a_settled_fragmented_day_becomes_one_part_with_the_same_rows(warehouse):
    before = _two_parts_per_day(warehouse)
    # A load's parts are written Compact (sql/007: one file per part, less insert memory).
    part_types = warehouse.query_rows(
        "SELECT DISTINCT part_type FROM system.parts WHERE database = {db:String} "
        "AND table = 'rollup_rows' AND active",
        {"db": warehouse.database},
    )
    assert part_types == [("Compact",)]

    done = compact_settled_days(warehouse, SETTLED_BEFORE, above_parts=1)

    assert [(r.table, r.day, r.parts_before, r.parts_after, r.rows) for r in done] == [
        ("rollup_rows", SETTLED, 2, 1, 2 * PART_ROWS)
    ]
    assert (_parts(warehouse, SETTLED), _parts(warehouse, RECENT)) == (1, 2)
    assert {day: _fingerprint(warehouse, day) for day in before} == before
    # A compacted day is not merged again.
    assert compact_settled_days(warehouse, SETTLED_BEFORE, above_parts=1) == []


@pytest.mark.parametrize("table", ["usage_hourly", "usage_daily"])
def test_a_settled_published_day_becomes_one_part_with_the_same_rows(warehouse, table):
    """A large day is published in several parts (account buckets) that no background merge
    combines (sql/011): compaction merges a settled one, rows unchanged, and no other table."""
    before = _two_parts_per_day(warehouse, table)

    done = compact_settled_days(warehouse, SETTLED_BEFORE, above_parts=1)

    assert [(r.table, r.day, r.parts_before, r.parts_after, r.rows) for r in done] == [
        (table, SETTLED, 2, 1, 2 * PART_ROWS)
    ]
    assert (_parts(warehouse, SETTLED, table), _parts(warehouse, RECENT, table)) == (1, 2)
    assert {day: _fingerprint(warehouse, day, table) for day in before} == before


def test_warehouse_maintenance_job_compacts_through_dagster(usage_env):
    settings = Settings()
    warehouse = Warehouse.open(settings.clickhouse_dsn, settings.database)
    try:
        apply_migrations(warehouse, DdlOptions.from_settings(settings))
        before = _two_parts_per_day(warehouse)
    finally:
        warehouse.close()  # the job's resource opens the (embedded) engine itself

    from usage_etl.definitions import defs

    definitions = defs()
    assert definitions.resolve_schedule_def("warehouse_maintenance_schedule").cron_schedule
    result = definitions.resolve_job_def("warehouse_maintenance").execute_in_process(
        run_config={
            "ops": {"compact_settled_days": {"config": {"today": "2026-10-06", "above_parts": 1}}}
        },
        instance=dg.DagsterInstance.ephemeral(),
    )

    assert result.success
    (output,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert metadata["settled_before"].value == SETTLED_BEFORE.isoformat()
    assert (metadata["days_compacted"].value, metadata["days_waiting"].value) == (1, 0)
    warehouse = Warehouse.open(settings.clickhouse_dsn, settings.database)
    try:
        assert (_parts(warehouse, SETTLED), _parts(warehouse, RECENT)) == (1, 2)
        assert {day: _fingerprint(warehouse, day) for day in before} == before
    finally:
        if not warehouse.embedded:
            warehouse.command(f"DROP DATABASE IF EXISTS `{settings.database}`")
        warehouse.close()
