"""When a partition is late (pure date arithmetic, UTC).

- A day's `usage_daily` is due the next day at the usage deadline (default 07:30): at
  2026-10-06 07:30 the day 2026-10-05 must be published.
- A month's `invoice_line_items` are due final at period_end + grace_days + extra days
  (default 1): October 2026 with 3 grace days at 2026-11-05 00:00.

The deadline checks are evaluated by the `partition_deadlines` sensor from the Dagster
instance, not by the contract jobs' runs (their names: usage_etl/defs/vocabulary.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from usage_etl.periods import Period


def usage_deadline_of(day: date, deadline: time) -> datetime:
    """When `day` must be published: the next day at `deadline` (UTC)."""
    return datetime.combine(day + timedelta(days=1), deadline, tzinfo=UTC)


def latest_due_day(now: datetime, deadline: time) -> date:
    """The latest day whose deadline has passed at `now`."""
    now = now.astimezone(UTC)
    day = now.date() - timedelta(days=1)
    return day if usage_deadline_of(day, deadline) <= now else day - timedelta(days=1)


def invoice_deadline_of(period: Period, grace_days: int, extra_days: int) -> datetime:
    """When `period` must be final: period_end + grace_days + extra_days (UTC midnight)."""
    return period.final_due_at(grace_days) + timedelta(days=extra_days)


def latest_due_period(now: datetime, grace_days: int, extra_days: int) -> Period:
    """The latest billing period whose finality deadline has passed at `now`."""
    period = Period.containing(now.astimezone(UTC).date()).previous()
    while invoice_deadline_of(period, grace_days, extra_days) > now:
        period = period.previous()
    return period


def overdue_text(deadline: datetime, now: datetime) -> str:
    """`2 h 05 min` past the deadline (minutes resolution)."""
    minutes = max(0, int((now - deadline).total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    text = f"{hours} h {minutes:02d} min"
    return f"{days} d {text}" if days else text
