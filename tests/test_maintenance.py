"""Compaction of settled staging days (warehouse_maintenance): it merges parts, never rows."""

from __future__ import annotations

from datetime import date

import dagster as dg

from usage_etl.maintenance.compaction import compact_settled_days
from usage_etl.settings import Settings
from usage_etl.warehouse.client import Warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

SETTLED = date(2026, 10, 1)
RECENT = date(2026, 10, 5)
SETTLED_BEFORE = date(2026, 10, 3)
# One INSERT writes one part of ~12 MiB: two add up to more than sql/006's 16 MiB cap, so no
# background merge combines them behind the test's back; only compaction can.
PART_ROWS = 400_000


def _insert_part(warehouse: Warehouse, day: date) -> None:
    warehouse.command(
        f"INSERT INTO {warehouse.table('rollup_rows')} "
        "(day, event_id, account_id, bytes, request_count, source_key, source_etag, run_id) "
        "SELECT {day:Date}, hex(randomString(16)), 'acme', number, 1, 'k', 'e', 'r' "
        "FROM numbers({rows:UInt32})",
        {"day": day, "rows": PART_ROWS},
    )


def _parts(warehouse: Warehouse, day: date) -> int:
    return warehouse.query_one(
        "SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'rollup_rows' "
        "AND active AND partition = {day:String}",
        {"db": warehouse.database, "day": day.isoformat()},
    )


def _fingerprint(warehouse: Warehouse, day: date) -> tuple:
    """The day's rows as a multiset: count and an order-free sum of row hashes."""
    return tuple(
        warehouse.query_rows(
            f"SELECT count(), sum(cityHash64(event_id, bytes, load_key)) "
            f"FROM {warehouse.table('rollup_rows')} WHERE day = {{day:Date}}",
            {"day": day},
        )[0]
    )


def _two_parts_per_day(warehouse: Warehouse) -> dict[date, tuple]:
    for day in (SETTLED, RECENT):
        _insert_part(warehouse, day)
        _insert_part(warehouse, day)
        assert _parts(warehouse, day) == 2
    return {day: _fingerprint(warehouse, day) for day in (SETTLED, RECENT)}


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

    assert [(r.day, r.parts_before, r.parts_after, r.rows) for r in done] == [
        (SETTLED, 2, 1, 2 * PART_ROWS)
    ]
    assert (_parts(warehouse, SETTLED), _parts(warehouse, RECENT)) == (1, 2)
    assert {day: _fingerprint(warehouse, day) for day in before} == before
    # A compacted day is not merged again.
    assert compact_settled_days(warehouse, SETTLED_BEFORE, above_parts=1) == []


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
            "ops": {"compact_rollup_rows": {"config": {"today": "2026-10-06", "above_parts": 1}}}
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
