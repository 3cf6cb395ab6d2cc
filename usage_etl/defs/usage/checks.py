"""Checks of one published day: exactness, quarantine and conflicts."""

import dagster as dg

from usage_etl.defs.partitions import daily_partitions
from usage_etl.defs.usage.assets import _day
from usage_etl.ingest import audit
from usage_etl.resources import ClickHouseResource


@dg.asset_check(
    asset="usage_daily", blocking=True, pool="warehouse", partitions_def=daily_partitions
)
def usage_daily_is_exact(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> dg.AssetCheckResult:
    """Recompute the day independently (LIMIT 1 BY event_id instead of argMax) from the staged
    rows that count, and compare with what usage_daily publishes: no event_id counted twice,
    none missing."""
    day = _day(context)
    result = audit.recompute_day(clickhouse.get_warehouse(), day)
    description = (
        "usage_daily equals an independent recomputation of the staged rollups"
        if result.matches
        else "usage_daily differs from its staged rollups: re-run daily_usage for this day; if "
        "it persists, compare rollup_rows and ingest_objects for the day and escalate"
    )
    return dg.AssetCheckResult(
        passed=result.matches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=result.metadata(),
    )


@dg.asset_check(
    asset="rollup_rows", blocking=False, pool="warehouse", partitions_def=daily_partitions
)
def quarantine_report(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> dg.AssetCheckResult:
    """WARN when any row or file of the day is quarantined, with the rules and the files."""
    day = _day(context)
    report = audit.quarantine_summary(clickhouse.get_warehouse(), day)
    return dg.AssetCheckResult(
        passed=report.total_rows == 0 and report.total_files == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.description(),
        metadata=report.metadata(),
    )


@dg.asset_check(
    asset="usage_daily", blocking=False, pool="warehouse", partitions_def=daily_partitions
)
def conflict_report(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> dg.AssetCheckResult:
    """WARN when versions of one event_id share emitted_at but differ in content. The higher
    content hash was billed (deterministic); the node that emitted both must be fixed."""
    day = _day(context)
    conflicts = audit.conflicts(clickhouse.get_warehouse(), day)
    return dg.AssetCheckResult(
        passed=not conflicts.count,
        severity=dg.AssetCheckSeverity.WARN,
        description=conflicts.description(),
        metadata=conflicts.metadata(),
    )
