"""Sensors: late rollup files re-run their day; a late-file re-run then refreshes invoices.

`late_rollup_files` reads S3 listings and the Dagster instance only (never ClickHouse), looks
at a bounded batch of days per tick under a time budget, and keeps its place in the cursor.
Days that were never materialized are left to the schedule and to backfills."""

import time
from datetime import UTC, date, datetime

import dagster as dg

from usage_etl.automation import tags
from usage_etl.automation.calendar import months_to_refresh
from usage_etl.automation.late_files import (
    ScanCursor,
    ScanWindow,
    late_objects,
    signature,
)
from usage_etl.defs.automation.history import day_baselines
from usage_etl.defs.jobs import daily_usage, monthly_invoices
from usage_etl.defs.resources import ClockResource, LandingResource, PriceBookResource
from usage_etl.defs.vocabulary import FIRST_DAY, PARTITION_TAG, sensor_status
from usage_etl.invoicing.price_book import load_price_book
from usage_etl.landing import Landing
from usage_etl.s3 import s3_client

LATE_FILE_INTERVAL_SECONDS = 120
TICK_BUDGET_SECONDS = 20.0  # well under the daemon's sensor timeout; the rest waits a tick
FIRST = date.fromisoformat(FIRST_DAY)


@dg.sensor(
    name="late_rollup_files",
    job=daily_usage,
    minimum_interval_seconds=LATE_FILE_INTERVAL_SECONDS,
    default_status=sensor_status(),
    description="Re-runs daily_usage for a day when rollup files landed after the run that "
    "last published it. Scans the last USAGE_ETL_LATE_LOOKBACK_DAYS days (35), "
    "USAGE_ETL_LATE_DAYS_PER_TICK (7) day prefixes per tick, round-robin.",
)
def late_rollup_files(context: dg.SensorEvaluationContext, landing: LandingResource):
    window = ScanWindow.from_env()
    days = window.days(datetime.now(UTC).date(), FIRST)
    cursor = ScanCursor.parse(context.cursor)
    cursor.forget_outside(days)
    batch = cursor.next_batch(days, window.days_per_tick)
    baselines = day_baselines(context.instance, batch)
    area = Landing(s3_client(max_attempts=2), landing.bucket, landing.prefix)
    deadline = time.monotonic() + TICK_BUDGET_SECONDS
    requests = []
    for index, day in enumerate(batch):
        if time.monotonic() > deadline:
            cursor.position = days.index(day)  # resume here next tick
            context.log.warning(f"tick budget spent after {index} of {len(batch)} days")
            break
        request = _late_request(context, cursor, area, day, baselines.get(day))
        if request is not None:
            requests.append(request)
    scanned = f"{batch[0]}..{batch[-1]}" if batch else "nothing"
    return dg.SensorResult(
        run_requests=requests,
        cursor=cursor.dump(),
        skip_reason=None if requests else f"no late rollup files (scanned {scanned})",
    )


def _late_request(context, cursor: ScanCursor, landing: Landing, day: date, baseline: float | None):
    key = day.isoformat()
    if baseline is None:  # never published: not a late file, a day still to run
        cursor.requested.pop(key, None)
        return None
    late = late_objects(landing.rollups_of_day(day), baseline)
    if not late:
        cursor.requested.pop(key, None)
        return None
    arrival = signature(late)
    if cursor.requested.get(key) == arrival:
        return None  # already requested; its run has not published yet
    cursor.requested[key] = arrival
    context.log.info(f"{key}: {len(late)} rollup file(s) landed after its last run")
    return dg.RunRequest(
        run_key=f"late:{key}:{arrival}",
        partition_key=key,
        tags={**tags.day_tags(day, tags.LATE_FILE), "usage_etl/late_objects": str(len(late))},
    )


@dg.run_status_sensor(
    name="invoices_after_late_usage",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_usage],
    request_job=monthly_invoices,
    minimum_interval_seconds=60,
    default_status=sensor_status(),
    description="After a late-file re-run of a day succeeds, re-run monthly_invoices for the "
    "day's month and, if that month is past its grace period, for the first open month, "
    "which carries the adjustments.",
)
def invoices_after_late_usage(
    context: dg.RunStatusSensorContext, clock: ClockResource, price_book: PriceBookResource
):
    run = context.dagster_run
    if run.tags.get(tags.TRIGGER_TAG) != tags.LATE_FILE or PARTITION_TAG not in run.tags:
        return dg.SkipReason(f"run {run.run_id} was not a late-file re-run")
    day = date.fromisoformat(run.tags[PARTITION_TAG])
    grace_days = load_price_book(price_book.resolved_path()).grace_days
    return [
        dg.RunRequest(
            run_key=f"after:{run.run_id}:{period.label}",
            partition_key=period.start.isoformat(),
            tags={**tags.month_tags(period, tags.LATE_USAGE), "usage_etl/after_run": run.run_id},
        )
        for period in months_to_refresh(day, clock.now(), grace_days)
    ]
