"""Partitions of the two contract jobs: UTC days for usage, UTC calendar months for invoices."""

import dagster as dg

FIRST_DAY = "2025-01-01"

# Last partition is yesterday: a day is materialized once it has ended (late files re-run it).
daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# end_offset=1 includes the current, still-open month so its draft can be refreshed daily.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_DAY, timezone="UTC", end_offset=1
)
