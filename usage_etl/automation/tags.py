"""Run tags an operator filters on (Runs page: `tag:usage_etl/day=2026-10-05`)."""

from __future__ import annotations

from datetime import date

from usage_etl.periods import Period

DAY_TAG = "usage_etl/day"
MONTH_TAG = "usage_etl/month"
TRIGGER_TAG = "usage_etl/trigger"

SCHEDULE = "schedule"
LATE_FILE = "late_file"
LATE_USAGE = "late_usage"  # invoice refresh after a late-file re-run of a day


def day_tags(day: date, trigger: str) -> dict[str, str]:
    """A daily_usage run: its day, and the month the day bills into."""
    return {DAY_TAG: day.isoformat(), MONTH_TAG: Period.containing(day).label, TRIGGER_TAG: trigger}


def month_tags(period: Period, trigger: str) -> dict[str, str]:
    return {MONTH_TAG: period.label, TRIGGER_TAG: trigger}
