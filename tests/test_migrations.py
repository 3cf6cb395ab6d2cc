"""Migrations: applied in order and once, edits refused, an existing cache_events kept, cluster
DDL, and the table settings they give rollup_rows."""

from __future__ import annotations

import pytest

from usage_etl.warehouse.client import Warehouse, WarehouseError
from usage_etl.warehouse.migrations import (
    DdlOptions,
    applied_versions,
    apply_migrations,
    discover,
    render,
)


def test_migrations_apply_in_order_once(warehouse, settings):
    versions = [m.version for m in discover()]
    assert versions == sorted(versions) and versions[0] == "001"
    assert set(applied_versions(warehouse, settings.database)) == set(versions)
    # Re-applying is a no-op and changes nothing.
    assert apply_migrations(warehouse, DdlOptions.from_settings(settings)) == []
    tables = {
        r[0]
        for r in warehouse.query_rows(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            {"db": settings.database},
        )
    }
    assert {"cache_events", "usage_daily", "usage_hourly", "ingest_objects"} <= tables


def test_existing_cache_events_table_is_left_alone(usage_env, settings):
    """The application owns cache_events: a pre-existing table (other ORDER BY) is kept."""
    wh = Warehouse.open(settings.clickhouse_dsn, settings.database)
    try:
        wh.command(f"CREATE DATABASE IF NOT EXISTS `{settings.database}`")
        wh.command(
            f"CREATE TABLE {wh.table('cache_events')} (event_id String, occurred_at "
            "DateTime64(3, 'UTC'), account_id String, project_id String, artifact_kind "
            "LowCardinality(String), action Enum8('upload' = 1, 'download' = 2), size_bytes "
            "UInt64, app_only_column UInt8 DEFAULT 7) ENGINE = MergeTree ORDER BY event_id"
        )
        apply_migrations(wh, DdlOptions.from_settings(settings))
        columns = [r[0] for r in wh.query_rows(f"DESCRIBE TABLE {wh.table('cache_events')}")]
        assert "app_only_column" in columns
    finally:
        wh.close()


def test_edited_migration_is_refused(warehouse, settings):
    warehouse.command(
        f"ALTER TABLE {warehouse.table('schema_migrations')} UPDATE checksum = 'x' "
        "WHERE version = '001'",
        mutations_sync=1,
    )
    with pytest.raises(WarehouseError, match="changed after it was applied"):
        apply_migrations(warehouse, DdlOptions.from_settings(settings))


def test_cluster_ddl_is_rendered_with_on_cluster_and_replicated_engines():
    options = DdlOptions(database="usage", cluster="billing", replicated=True)
    statements = [s for m in discover() for s in render(m, options)]
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    assert creates and all("ON CLUSTER `billing`" in s for s in creates)
    assert all("ENGINE = ReplicatedMergeTree" in s for s in creates)
    plain = [s for m in discover() for s in render(m, DdlOptions(database="usage"))]
    assert not any("ON CLUSTER" in s or "Replicated" in s for s in plain)


def test_background_merges_leave_a_days_bulk_load_alone(warehouse, settings):
    """sql/006: rollup_rows merges in the background only parts adding up to 16 MiB or less
    (late files), never the ~15 MiB parts of a day's bulk load, which its readers take as they
    are; sql/011: the same for the parts of a large day's publication. (`OPTIMIZE ...
    PARTITION` still compacts a day on demand, warehouse_maintenance a settled one.)"""
    engines = dict(
        warehouse.query_rows(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
            {"db": settings.database},
        )
    )
    assert "max_bytes_to_merge_at_max_space_in_pool = 16777216" in engines["rollup_rows"]
    # sql/007: those parts are Compact (one file), a merged day is Wide.
    assert "min_bytes_for_wide_part = 67108864" in engines["rollup_rows"]
    # sql/011: nor the parts a large day's publish swaps into the usage tables.
    for table in ("usage_hourly", "usage_daily"):
        assert "max_bytes_to_merge_at_max_space_in_pool = 16777216" in engines[table]
