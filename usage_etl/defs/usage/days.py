"""The days of one daily_usage run, and how a run over a range of days fails.

A run launched for one partition (the schedule, the sensor, `dagster job execute --tags
'{"dagster/partition": …}'`) processes that day. A backfill runs a range of days in one run
(the assets' `BackfillPolicy`), so it pays the process start, definitions load and engine open
once instead of once per day. Each step then walks the range day by day and keeps every per-day
guarantee: the ledger per object, one atomic publish per day, one check result per day.

A day that fails does not stop the others: the step goes on with the later days, records the
days that succeeded (their own materializations and check results, per partition, so an asset
backfill's "failed and missing" re-run takes only the failed days), then fails naming the
failed days.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date

import dagster as dg

from usage_etl.defs.vocabulary import days_of
from usage_etl.settings import location_settings
from usage_etl.usage.load import StorageError
from usage_etl.warehouse.client import WarehouseError


def backfill_policy(days_per_run: str | None) -> dg.BackfillPolicy:
    """Default: every day of a backfill in one run (the embedded engine admits one run at a
    time anyway, and a day failing inside the run fails alone). USAGE_ETL_BACKFILL_DAYS_PER_RUN
    =N splits a backfill into runs of N days (with a ClickHouse server and a `warehouse` pool
    above 1 they run in parallel); 1 is one run per day, as before."""
    if not days_per_run:
        return dg.BackfillPolicy.single_run()
    days = int(days_per_run)
    if days < 1:
        raise ValueError(f"USAGE_ETL_BACKFILL_DAYS_PER_RUN must be >= 1, got {days_per_run!r}")
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=days)


DAILY_BACKFILL_POLICY = backfill_policy(location_settings().backfill_days_per_run)


def is_range(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> bool:
    return len(days_of(context)) > 1


def transient(exc: BaseException) -> bool:
    """Faults the step's RetryPolicy retries (see errors.py)."""
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, WarehouseError) and exc.transient


def day_list(days: Iterable[date]) -> str:
    return ", ".join(d.isoformat() for d in sorted(days))


def range_failure(what: str, days: int, failures: Mapping[date, BaseException]) -> BaseException:
    """The error a range step ends with when some of its days failed.

    Only transient faults: the original error, so the step's RetryPolicy retries the range
    (objects already decided and days already published are cheap to redo). Otherwise a
    Failure that names every failed day and is not retried."""
    if all(transient(exc) for exc in failures.values()):
        return next(iter(failures.values()))
    lines = "\n".join(f"- {day}: {exc}" for day, exc in sorted(failures.items()))
    return dg.Failure(
        description=f"{what} failed for {len(failures)} of {days} days: "
        f"{day_list(failures)}. The other days are done; re-run the failed days "
        f"(backfill 'failed and missing', or each day alone).\n{lines}",
        metadata={"failed_days": [d.isoformat() for d in sorted(failures)]},
        allow_retries=False,
    )


def check_evaluation(
    result: dg.AssetCheckResult,
    asset_key: dg.AssetKey,
    check_name: str,
    day: date,
    blocking: bool,
) -> dg.AssetCheckEvaluation:
    """One day's result of a partitioned check inside a range run.

    Dagster 1.13 turns an `AssetCheckResult` into an evaluation of the run's single partition
    (`context.partition_key`, which a range run does not have), so a range run states the
    partition of each day's evaluation itself."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=result.passed,
        metadata={"day": day.isoformat(), **(result.metadata or {})},
        severity=result.severity,
        description=_naming(day, result.description),
        blocking=blocking,
        partition=day.isoformat(),
    )


def _naming(day: date, description: str | None) -> str:
    if not description:
        return day.isoformat()
    return description if day.isoformat() in description else f"{day}: {description}"


def per_day_check(
    context: dg.AssetCheckExecutionContext,
    asset_key: dg.AssetKey,
    check_name: str,
    blocking: bool,
    evaluate: Callable[[date], dg.AssetCheckResult],
    evaluate_days: Callable[[list[date]], Mapping[date, dg.AssetCheckResult]] | None = None,
) -> Iterator:
    """The body of a partitioned check: its result for a partition run, one evaluation per day
    for a range run. `evaluate_days`, when given, evaluates all the days of a range at once
    (one statement for the range instead of one per day) and must return, for each day, what
    `evaluate` returns for it. A blocking check failing on some days fails the step after every
    day was checked, naming those days."""
    days = days_of(context)
    if not is_range(context):
        yield evaluate(days[0])
        return
    results = evaluate_days(days) if evaluate_days else None
    failed = []
    for day in days:
        result = results[day] if results is not None else evaluate(day)
        if blocking and not result.passed and result.severity == dg.AssetCheckSeverity.ERROR:
            failed.append(day)
        yield check_evaluation(result, asset_key, check_name, day, blocking)
    # The check's own output (what an AssetCheckResult yields for a single partition).
    (output,) = context.op_execution_context.op_def.output_defs
    yield dg.Output(None, output_name=output.name)
    if failed:
        raise dg.Failure(
            f"{check_name} failed for {len(failed)} of {len(days)} days: {day_list(failed)}",
            metadata={"failed_days": [d.isoformat() for d in failed]},
            allow_retries=False,
        )
