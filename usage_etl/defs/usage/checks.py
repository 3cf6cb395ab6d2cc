"""Checks of one published day: exactness, quarantine and conflicts.

A range run (backfill) evaluates each check once per day, each result stored against its own
partition (days.check_evaluation); a blocking check that fails on some days fails the step
after every day was checked, naming those days. The quarantine and conflict checks read all the
days of a range in one go (usage/audit_days.py); the exactness check recomputes day by day,
days.PARALLEL_DAYS at a time (days.each_day)."""

from collections.abc import Callable, Iterator
from datetime import date

import dagster as dg

from usage_etl.defs.resources import ClickHouseResource
from usage_etl.defs.usage.days import check_evaluation, each_day, per_day_check
from usage_etl.defs.vocabulary import POOL, ROLLUP_ROWS_KEY, USAGE_DAILY_KEY, daily_partitions
from usage_etl.usage import audit, audit_days
from usage_etl.warehouse.client import Warehouse


def _exactness(warehouse: Warehouse, day: date) -> dg.AssetCheckResult:
    result = audit.recompute_day(warehouse, day)
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


def _exactness_days(
    warehouse: Warehouse, days: list[date]
) -> dict[date, dg.AssetCheckResult | Exception]:
    return each_day(warehouse, days, _exactness)


def _quarantine(warehouse: Warehouse, day: date) -> dg.AssetCheckResult:
    return _quarantine_result(audit.quarantine_summary(warehouse, day))


def _quarantine_days(warehouse: Warehouse, days: list[date]) -> dict[date, dg.AssetCheckResult]:
    summaries = audit_days.quarantine_summaries(warehouse, days)
    return {day: _quarantine_result(summary) for day, summary in summaries.items()}


def _quarantine_result(report: audit.QuarantineSummary) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=report.total_rows == 0 and report.total_files == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.description(),
        metadata=_quarantine_metadata(report),
    )


def _conflicts(warehouse: Warehouse, day: date) -> dg.AssetCheckResult:
    return _conflicts_result(audit.conflicts(warehouse, day))


def _conflicts_days(warehouse: Warehouse, days: list[date]) -> dict[date, dg.AssetCheckResult]:
    found = audit_days.conflicts_by_day(warehouse, days)
    return {day: _conflicts_result(conflicts) for day, conflicts in found.items()}


def _conflicts_result(conflicts: audit.Conflicts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not conflicts.count,
        severity=dg.AssetCheckSeverity.WARN,
        description=conflicts.description(),
        metadata={
            "conflicts": conflicts.count,
            "examples": dg.MetadataValue.json(conflicts.examples),
        },
    )


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _quarantine_metadata(report: audit.QuarantineSummary) -> dict:
    samples = "\n".join(
        [
            "| object | row | rule | field | value |",
            "|---|---:|---|---|---|",
            *(
                f"| {_md_cell(s['source_key'])} | {s['source_row']} | {s['rule']} | "
                f"{_md_cell(s['field'])} | {_md_cell(s['value'])[:80]} |"
                for s in report.samples
            ),
        ]
    )
    return {
        "quarantined_by_rule": report.by_rule,
        "files_quarantined": [f"{f['source_key']} ({f['rule']})" for f in report.files][:50],
        "samples": dg.MetadataValue.md(samples),
    }


OneDay = Callable[[Warehouse, date], dg.AssetCheckResult]
Days = Callable[[Warehouse, list[date]], dict[date, dg.AssetCheckResult | Exception]]

# (asset, check name, blocking, evaluation of one day, of a range of days or None: day by day)
CHECKS: tuple[tuple[dg.AssetKey, str, bool, OneDay, Days | None], ...] = (
    (USAGE_DAILY_KEY, "usage_daily_is_exact", True, _exactness, _exactness_days),
    (ROLLUP_ROWS_KEY, "quarantine_report", False, _quarantine, _quarantine_days),
    (USAGE_DAILY_KEY, "conflict_report", False, _conflicts, _conflicts_days),
)


def range_check_evaluations(warehouse: Warehouse, days: list[date]) -> Iterator:
    """The usage_daily checks of the days a range step published before it failed on other
    days: the check steps are skipped once their upstream step failed."""
    for asset, name, blocking, evaluate, evaluate_days in CHECKS:
        if asset != USAGE_DAILY_KEY or not days:
            continue
        results = evaluate_days(warehouse, days) if evaluate_days else {}
        for day in days:
            result = results[day] if day in results else evaluate(warehouse, day)
            if isinstance(result, Exception):
                raise result
            yield check_evaluation(result, asset, name, day, blocking)


def _per_day(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource, name: str
) -> Iterator:
    asset, _, blocking, evaluate, evaluate_days = next(c for c in CHECKS if c[1] == name)
    warehouse = clickhouse.get_warehouse()
    yield from per_day_check(
        context, asset, name, blocking,
        lambda day: evaluate(warehouse, day),
        (lambda days: evaluate_days(warehouse, days)) if evaluate_days else None,
    )  # fmt: skip


@dg.asset_check(asset=USAGE_DAILY_KEY, blocking=True, pool=POOL, partitions_def=daily_partitions)
def usage_daily_is_exact(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> Iterator:
    """Recompute the day independently (LIMIT 1 BY event_id instead of argMax) from the staged
    rows that count, and compare with what usage_daily publishes: no event_id counted twice,
    none missing."""
    yield from _per_day(context, clickhouse, "usage_daily_is_exact")


@dg.asset_check(asset=ROLLUP_ROWS_KEY, blocking=False, pool=POOL, partitions_def=daily_partitions)
def quarantine_report(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> Iterator:
    """WARN when any row or file of the day is quarantined, with the rules and the files."""
    yield from _per_day(context, clickhouse, "quarantine_report")


@dg.asset_check(asset=USAGE_DAILY_KEY, blocking=False, pool=POOL, partitions_def=daily_partitions)
def conflict_report(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> Iterator:
    """WARN when versions of one event_id share emitted_at but differ in content. The higher
    content hash was billed (deterministic); the node that emitted both must be fixed."""
    yield from _per_day(context, clickhouse, "conflict_report")
