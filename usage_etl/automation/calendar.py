"""When which partition is due: the day after it ended, the month's draft daily, finalization
once period_end + grace_days has passed (contract §3/§5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from usage_etl.periods import Period


def previous_day(at: datetime) -> date:
    """The last complete UTC day at `at` (the daily schedule's partition)."""
    return at.date() - timedelta(days=1)


def first_open_period(now: datetime, grace_days: int) -> Period:
    """The earliest period not yet due for finalization at `now`: where adjustments for late
    usage of final periods are billed when finalization keeps up with the calendar."""
    return Period.containing((now - timedelta(days=grace_days)).date())


@dataclass(frozen=True)
class InvoiceRequest:
    period: Period
    purpose: str  # "draft" or "finalize"


def invoice_requests(
    at: datetime, grace_days: int, is_final: Callable[[Period], bool]
) -> list[InvoiceRequest]:
    """What the daily invoice schedule requests at `at`, in launch order.

    The previous month is refreshed as a draft while in its grace period, then requested for
    finalization every day until a run has published it final (a blocked finalization fails
    and is retried the next day). The current month's draft comes last so that, once the
    previous month is final, its run bills adjustments against it.
    """
    current = Period.containing(at.date())
    previous = current.previous()
    requests = []
    if not previous.is_final_due(at, grace_days):
        requests.append(InvoiceRequest(previous, "draft"))
    elif not is_final(previous):
        requests.append(InvoiceRequest(previous, "finalize"))
    requests.append(InvoiceRequest(current, "draft"))
    return requests


def months_to_refresh(day: date, now: datetime, grace_days: int) -> list[Period]:
    """Invoice partitions to re-run after `day`'s usage changed: the day's own month, and if
    that month is already due for finalization (so final, or blocked), the first open period
    that carries its adjustments."""
    own = Period.containing(day)
    open_period = first_open_period(now, grace_days)
    return [own] if own >= open_period else [own, open_period]
