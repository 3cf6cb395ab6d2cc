"""The Dagster vocabulary of the code location, in one place: partitions and how a step reads
its partition, asset keys, check and job names, groups, tags and the concurrency pool.

Every module under `defs/` takes these names from here instead of spelling them. The job,
asset and check names are contract (docs/contract.md §6): their values never change.

Partitions: UTC days for usage, UTC calendar months for invoices. The first day comes from
`USAGE_ETL_FIRST_DAY` (YYYY-MM-DD, default 2025-01-01), read when the definitions load
(settings.LocationSettings): it touches no engine, it only decides how far back the UI's
partition views and backfill pickers reach. Set it to the first day you have rollups for (the
demo sets it to its first simulated day, so a fresh demo does not show hundreds of empty
partitions). Monthly partitions start with the first day's month. Schedules and sensors start
RUNNING or STOPPED as `USAGE_ETL_AUTOMATION` says, read at the same time.
"""

from datetime import date, timedelta

import dagster as dg

from usage_etl.periods import Period
from usage_etl.settings import location_settings

# Every asset, check and op that opens the warehouse takes a slot of this concurrency pool.
POOL = "warehouse"

# Asset groups: each contract job selects one (defs/jobs.py).
SOURCES_GROUP = "sources"
USAGE_GROUP = "usage"
INVOICING_GROUP = "invoicing"

# Asset keys.
LANDING_FILES_KEY = dg.AssetKey("landing_rollup_files")
CACHE_EVENTS_KEY = dg.AssetKey("cache_events")
ROLLUP_ROWS_KEY = dg.AssetKey("rollup_rows")
USAGE_HOURLY_KEY = dg.AssetKey("usage_hourly")
USAGE_DAILY_KEY = dg.AssetKey("usage_daily")
INVOICE_LINES_KEY = dg.AssetKey("invoice_line_items")
INVOICES_KEY = dg.AssetKey("invoices")
INVOICE_EXPORTS_KEY = dg.AssetKey("invoice_exports")

# Deadline checks (defs/alerting): judged by the partition_deadlines sensor, not by runs.
USAGE_DEADLINE_CHECK = "published_by_deadline"
INVOICE_DEADLINE_CHECK = "final_by_deadline"

# Jobs (contract §6) and the housekeeping job.
DAILY_USAGE_JOB = "daily_usage"
MONTHLY_INVOICES_JOB = "monthly_invoices"
MAINTENANCE_JOB = "warehouse_maintenance"

# Run tags.
PARTITION_TAG = "dagster/partition"  # Dagster's own: the run's partition key
JOB_TAG = "usage_etl/job"

FIRST_DAY = location_settings().first_day
FIRST_MONTH = date.fromisoformat(FIRST_DAY).replace(day=1).isoformat()

# Last partition is yesterday: a day is materialized once it has ended (late files re-run it).
daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# end_offset=1 includes the current, still-open month so its draft can be refreshed daily.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_MONTH, timezone="UTC", end_offset=1
)


def days_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[date]:
    """The days of a daily-partitioned step, in order: one for a partition run, every day of
    the range for a range run (a backfill, defs/usage/days.py)."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=i) for i in range((end - first).days)]


def period_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Period:
    """The billing period of a monthly-partitioned step (one month per run)."""
    window = context.partition_time_window
    period = Period(window.start.date())
    if period.end != window.end.date():
        raise ValueError(f"a monthly step runs one month, got {window.start}..{window.end}")
    return period


def automation_running() -> bool:
    return location_settings().automation == "running"


def schedule_status() -> dg.DefaultScheduleStatus:
    """The status a schedule starts with (USAGE_ETL_AUTOMATION)."""
    running = automation_running()
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def sensor_status() -> dg.DefaultSensorStatus:
    """The status a sensor starts with (USAGE_ETL_AUTOMATION)."""
    running = automation_running()
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
