"""warehouse_maintenance: merge settled days of rollup_rows, usage_hourly and usage_daily into
one part each.

Not a contract job: housekeeping. It takes the `warehouse` pool like every step that opens the
warehouse, so on the embedded engine it queues behind (or ahead of) the daily runs."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from usage_etl.defs.resources import ClickHouseResource
from usage_etl.defs.vocabulary import JOB_TAG, MAINTENANCE_JOB, POOL
from usage_etl.maintenance.compaction import (
    COMPACT_ABOVE_PARTS,
    MAX_DAYS_PER_RUN,
    compact_settled_days,
)


class CompactionConfig(dg.Config):
    settle_days: int = Field(
        default=3, ge=1, description="Days younger than this are left to re-runs and late files."
    )
    above_parts: int = Field(
        default=COMPACT_ABOVE_PARTS, ge=1, description="Merge a day with more parts than this."
    )
    max_days: int = Field(default=MAX_DAYS_PER_RUN, ge=1, description="Days merged per run.")
    today: str | None = Field(
        default=None, description="ISO date to count from (default: UTC today)."
    )


@dg.op(name="compact_settled_days", pool=POOL, tags={"usage_etl/layer": "maintenance"})
def compact_settled_days_op(
    context: dg.OpExecutionContext, config: CompactionConfig, clickhouse: ClickHouseResource
) -> dg.Output[int]:
    """Merge each settled day of rollup_rows, usage_hourly and usage_daily that has more than
    `above_parts` parts into one part. What readers see is unchanged; later engine opens and
    day reads get cheaper."""
    today = date.fromisoformat(config.today) if config.today else datetime.now(UTC).date()
    settled_before = today - timedelta(days=config.settle_days)
    results = compact_settled_days(
        clickhouse.get_warehouse(), settled_before, config.above_parts, config.max_days
    )
    waiting = [r for r in results if not r.compacted]
    compacted = len(results) - len(waiting)
    for r in waiting:
        context.log.warning(
            f"{r.table} {r.day}: a background merge held its parts; retried next run"
        )
    table = "\n".join(
        f"| {r.table} | {r.day} | {r.parts_before} | {r.parts_after} | {r.rows:,} |"
        for r in results
    )
    return dg.Output(
        compacted,
        metadata={
            "settled_before": settled_before.isoformat(),
            "days_compacted": compacted,
            "days_waiting": len(waiting),
            "days": dg.MetadataValue.md(
                "| table | day | parts before | parts after | rows |\n|---|---|---:|---:|---:|\n"
                + table
                if results
                else "nothing to compact"
            ),
        },
    )


@dg.job(
    name=MAINTENANCE_JOB,
    executor_def=dg.in_process_executor,
    description="Merge settled days of rollup_rows, usage_hourly and usage_daily into one part "
    "each (housekeeping; readers see the same rows).",
    tags={JOB_TAG: MAINTENANCE_JOB},
)
def warehouse_maintenance() -> None:
    compact_settled_days_op()
