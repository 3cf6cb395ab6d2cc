"""Asset checks on `usage_daily`, one evaluation per day partition (contract §2).

They join the `daily_usage` job through their target asset. ClickHouse is read only inside the
check's run (never at definitions load or in sensors), and every aggregation runs in SQL.
"""

import warnings
from collections.abc import Iterator

import dagster as dg

from usage_etl.defs.reconciliation.report import (
    completeness_description,
    completeness_metadata,
    reconciliation_description,
    reconciliation_metadata,
)
from usage_etl.defs.resources import ClickHouseResource
from usage_etl.defs.usage.days import per_day_check
from usage_etl.defs.vocabulary import POOL, USAGE_DAILY_KEY, daily_partitions
from usage_etl.reconciliation.compare import (
    Status,
    Tolerances,
    node_hour_coverage,
    node_hour_coverages,
    reconcile,
    reconcile_days,
)


class ReconciliationConfig(dg.Config):
    """Per-run overrides of the tolerances; unset fields come from USAGE_ETL_RECONCILIATION_*
    (see docs/reconciliation.md)."""

    error_relative: str | None = None  # decimal string, e.g. "0.005"
    error_absolute_bytes: int | None = None
    warn_relative: str | None = None
    warn_absolute_bytes: int | None = None
    top_n: int | None = None

    def tolerances(self) -> Tolerances:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return Tolerances(**overrides)


# Partitioned asset checks are a preview feature in Dagster 1.13; the warning is noise here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=USAGE_DAILY_KEY,
        name="rollups_cover_cache_events",
        partitions_def=daily_partitions,
        blocking=False,
        pool=POOL,
        description="Per (account, project, artifact kind, direction): node rollups must be at "
        "least the cache events' bytes and close to them. ERROR when rollups are below "
        "(lost rollups, revenue leak), WARN when far above (analytics loss or double counting).",
    )
    def rollups_cover_cache_events(
        context: dg.AssetCheckExecutionContext,
        config: ReconciliationConfig,
        clickhouse: ClickHouseResource,
    ) -> Iterator:
        settings = clickhouse.settings()
        warehouse = clickhouse.get_warehouse()

        def result(rec) -> dg.AssetCheckResult:
            severity = dg.AssetCheckSeverity.ERROR
            if rec.status is Status.WARN:
                severity = dg.AssetCheckSeverity.WARN
            return dg.AssetCheckResult(
                passed=rec.status is Status.OK,
                severity=severity,
                metadata=reconciliation_metadata(rec),
                description=reconciliation_description(rec),
            )

        def evaluate(day):
            return result(
                reconcile(warehouse, day, config.tolerances(), settings.cache_events_table)
            )

        def evaluate_days(days):
            recs = reconcile_days(warehouse, days, config.tolerances(), settings.cache_events_table)
            return {day: result(rec) for day, rec in recs.items()}

        # One evaluation per day, also in a backfill's range run (its days read at once).
        yield from per_day_check(
            context, USAGE_DAILY_KEY, "rollups_cover_cache_events", False, evaluate, evaluate_days
        )

    @dg.asset_check(
        asset=USAGE_DAILY_KEY,
        name="node_hours_complete",
        partitions_def=daily_partitions,
        blocking=False,
        pool=POOL,
        description="Every node that reported during the day delivered a loaded rollup file for "
        "every UTC hour; lists missing node-hours and the newest object's arrival time.",
    )
    def node_hours_complete(
        context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
    ) -> Iterator:
        warehouse = clickhouse.get_warehouse()

        def evaluate(day):
            return result(node_hour_coverage(warehouse, day))

        def evaluate_days(days):
            return {day: result(c) for day, c in node_hour_coverages(warehouse, days).items()}

        def result(comp) -> dg.AssetCheckResult:
            return dg.AssetCheckResult(
                passed=comp.nodes > 0 and comp.gap_nodes == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata=completeness_metadata(comp),
                description=completeness_description(comp),
            )

        yield from per_day_check(
            context, USAGE_DAILY_KEY, "node_hours_complete", False, evaluate, evaluate_days
        )
