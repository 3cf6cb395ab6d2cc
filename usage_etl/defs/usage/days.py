"""The days of one daily_usage run, and how a run over a range of days fails.

A run launched for one partition (the schedule, the sensor, `dagster job execute --tags
'{"dagster/partition": …}'`) processes that day. A backfill runs a range of days in one run
(the assets' `BackfillPolicy`), so it pays the process start, definitions load and engine open
once instead of once per day. Each step then walks the range day by day and keeps every per-day
guarantee: the ledger per object, one atomic publish per day, one check result per day. The
publish and the exactness check take days two at a time (`each_day`).

A day that fails does not stop the others: the step goes on with the later days, records the
days that succeeded (their own materializations and check results, per partition, so an asset
backfill's "failed and missing" re-run takes only the failed days), then fails naming the
failed days.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from typing import TypeVar

import dagster as dg

from usage_etl.defs.vocabulary import days_of
from usage_etl.settings import location_settings, tuning
from usage_etl.usage.load import StorageError
from usage_etl.usage.publish import large_days
from usage_etl.warehouse.client import Warehouse, WarehouseError

# Days of a range published (and checked for exactness) at once: a small day's statements
# mostly wait on one core, so two days side by side use the other (USAGE_ETL_RANGE_PARALLEL_DAYS).
PARALLEL_DAYS = tuning().range_parallel_days

T = TypeVar("T")


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


def each_day(
    warehouse: Warehouse,
    days: list[date],
    work: Callable[[Warehouse, date], T],
    on_day: Callable[[date, T | Exception], None] | None = None,
) -> dict[date, T | Exception]:
    """`work(warehouse, day)` for every day: its result or the exception it raised, by day;
    `on_day(day, outcome)` is called on this thread, in day order, as each day ends.

    Up to PARALLEL_DAYS days run at once, each thread on its own connection
    (`Warehouse.sibling`); every day's work is its own (its own tables, its own atomic swap),
    so days done side by side are done as one by one. A large day (publish.large_days) runs
    with no other day in flight, on the run's own connection, so its memory is never doubled.
    Only PARALLEL_DAYS days are ever handed to the threads, so a step interrupted here waits
    for those alone."""
    outcomes: dict[date, T | Exception] = {}

    def finish(day: date, outcome: T | Exception) -> None:
        outcomes[day] = outcome
        if on_day is not None:
            on_day(day, outcome)

    if PARALLEL_DAYS < 2 or len(days) < 2:
        for day in days:
            finish(day, _attempt(work, warehouse, day))
        return outcomes
    large = large_days(warehouse, days)
    local = threading.local()
    siblings: list[Warehouse] = []
    guard = threading.Lock()

    def on_own_connection(day: date) -> T:
        own = getattr(local, "warehouse", None)
        if own is None:
            own = warehouse.sibling()
            with guard:
                siblings.append(own)
            local.warehouse = own
        return work(own, day)

    pending: deque[tuple[date, Future]] = deque()  # in day order
    try:
        with ThreadPoolExecutor(PARALLEL_DAYS, thread_name_prefix="range-day") as pool:
            for day in days:
                alone = day in large
                while pending and (alone or len(pending) >= PARALLEL_DAYS):
                    finish(*_waited(*pending.popleft()))
                if alone:
                    finish(day, _attempt(work, warehouse, day))
                else:
                    # The day runs in a copy of this thread's context: Dagster's current
                    # step (the retry budget, errors.py) is known there too.
                    work_in_context = contextvars.copy_context().run
                    pending.append((day, pool.submit(work_in_context, on_own_connection, day)))
            while pending:
                finish(*_waited(*pending.popleft()))
    finally:
        for own in siblings:
            own.close()
    return outcomes


def _attempt(work: Callable[[Warehouse, date], T], warehouse: Warehouse, day: date):
    try:
        return work(warehouse, day)
    except Exception as exc:  # the day's failure is its outcome; the other days go on
        return exc


def _waited(day: date, future: Future) -> tuple[date, object]:
    try:
        return day, future.result()
    except Exception as exc:
        return day, exc


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
    (one statement for the range, or days side by side: `each_day`) and must return, for each
    day, what `evaluate` returns for it or the exception it raises (raised here in its turn).
    A blocking check failing on some days fails the step after every day was checked, naming
    those days."""
    days = days_of(context)
    if not is_range(context):
        yield evaluate(days[0])
        return
    results = evaluate_days(days) if evaluate_days else None
    failed = []
    for day in days:
        result = results[day] if results is not None else evaluate(day)
        if isinstance(result, Exception):  # evaluate_days hands a day's error back as its result
            raise result
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
