"""Partitions of the two contract jobs: UTC days for usage, UTC calendar months for invoices.

The first day comes from `USAGE_ETL_FIRST_DAY` (YYYY-MM-DD, default 2025-01-01), read when the
definitions load: it touches no engine, it only decides how far back the UI's partition views
and backfill pickers reach. Set it to the first day you have rollups for (the demo sets it to
its first simulated day, so a fresh demo does not show hundreds of empty partitions). Monthly
partitions start with the first day's month.
"""

import os
from datetime import date

import dagster as dg

FIRST_DAY_ENV = "USAGE_ETL_FIRST_DAY"
DEFAULT_FIRST_DAY = "2025-01-01"


def first_day() -> str:
    value = (os.environ.get(FIRST_DAY_ENV) or DEFAULT_FIRST_DAY).strip()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{FIRST_DAY_ENV} must be a day like 2026-10-01, got {value!r}") from None


FIRST_DAY = first_day()
FIRST_MONTH = date.fromisoformat(FIRST_DAY).replace(day=1).isoformat()

# Last partition is yesterday: a day is materialized once it has ended (late files re-run it).
daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# end_offset=1 includes the current, still-open month so its draft can be refreshed daily.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_MONTH, timezone="UTC", end_offset=1
)
