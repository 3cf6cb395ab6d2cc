"""Billing periods: calendar months in UTC, `[period_start, period_end)`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

LABEL = re.compile(r"^(\d{4})-(\d{2})(?:-01)?$")


@dataclass(frozen=True, order=True)
class Period:
    start: date

    def __post_init__(self) -> None:
        if self.start.day != 1:
            raise ValueError(f"a billing period starts on the 1st, got {self.start}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """`2026-10` or the partition key `2026-10-01`."""
        match = LABEL.match(text.strip())
        if not match:
            raise ValueError(f"a billing period looks like 2026-10 or 2026-10-01, got {text!r}")
        return cls(date(int(match[1]), int(match[2]), 1))

    @classmethod
    def containing(cls, day: date) -> Period:
        return cls(day.replace(day=1))

    @property
    def end(self) -> date:
        """First day of the next month (exclusive)."""
        return (self.start + timedelta(days=32)).replace(day=1)

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m")

    @property
    def days(self) -> list[date]:
        count = (self.end - self.start).days
        return [self.start + timedelta(days=i) for i in range(count)]

    def next(self) -> Period:
        return Period(self.end)

    def previous(self) -> Period:
        return Period.containing(self.start - timedelta(days=1))

    def final_due_at(self, grace_days: int) -> datetime:
        end = datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC)
        return end + timedelta(days=grace_days)

    def is_final_due(self, as_of: datetime, grace_days: int) -> bool:
        """Contract §3: final once as-of >= period_end + grace_days."""
        return as_of >= self.final_due_at(grace_days)

    def __str__(self) -> str:
        return self.label


def days_between(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included (none if `last` is before `first`)."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
