"""Pure pieces of the automation: look-back window, cursor, late-object cut-off, invoice months."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from usage_etl.automation.calendar import first_open_period, months_to_refresh
from usage_etl.automation.late_files import LandedObject, ScanCursor, ScanWindow, late_objects
from usage_etl.automation.late_files import signature as late_signature
from usage_etl.periods import Period


def test_window_is_yesterday_back_to_lookback_and_not_before_the_first_partition():
    window = ScanWindow(lookback_days=3, days_per_tick=2)

    assert window.days(date(2026, 11, 23), date(2025, 1, 1)) == [
        date(2026, 11, 22),
        date(2026, 11, 21),
        date(2026, 11, 20),
    ]
    assert window.days(date(2025, 1, 3), date(2025, 1, 1)) == [date(2025, 1, 2), date(2025, 1, 1)]


def test_window_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("USAGE_ETL_LATE_LOOKBACK_DAYS", "10")
    monkeypatch.setenv("USAGE_ETL_LATE_DAYS_PER_TICK", "4")
    assert ScanWindow.from_env() == ScanWindow(10, 4)
    monkeypatch.setenv("USAGE_ETL_LATE_DAYS_PER_TICK", "0")
    with pytest.raises(ValueError, match="must be positive"):
        ScanWindow.from_env()


def test_cursor_visits_every_day_round_robin_and_survives_serialization():
    days = [date(2026, 11, d) for d in range(22, 15, -1)]  # 7 days, newest first
    cursor = ScanCursor()
    seen = []
    for _ in range(4):
        cursor = ScanCursor.parse(cursor.dump())
        seen.append(cursor.next_batch(days, 3))

    assert seen[0] == days[0:3]
    assert seen[1] == days[3:6]
    assert seen[2] == [days[6], days[0], days[1]]  # wraps around
    assert seen[3] == days[2:5]
    assert ScanCursor().next_batch([], 3) == []


def test_cursor_forgets_requests_for_days_that_left_the_window():
    cursor = ScanCursor(requested={"2026-10-01": "a", "2026-11-20": "b"})
    cursor.forget_outside([date(2026, 11, 20), date(2026, 11, 21)])
    assert cursor.requested == {"2026-11-20": "b"}


def _obj(key: str, at: str, etag: str = "e") -> LandedObject:
    return LandedObject(key, etag, datetime.fromisoformat(at).replace(tzinfo=UTC))


def test_an_object_stamped_in_the_baselines_second_counts_as_late():
    baseline = datetime(2026, 11, 20, 6, 0, 0, 700_000, tzinfo=UTC).timestamp()
    objects = [
        _obj("before", "2026-11-20T05:59:59"),
        _obj("same-second", "2026-11-20T06:00:00"),  # S3 truncates: may have landed after
        _obj("after", "2026-11-20T06:00:01"),
    ]
    assert [o.key for o in late_objects(objects, baseline)] == ["same-second", "after"]


def test_signature_changes_with_a_new_arrival_or_an_overwrite_but_not_with_order():
    a, b = _obj("a", "2026-11-20T07:00:00"), _obj("b", "2026-11-20T07:00:00")
    assert late_signature([a, b]) == late_signature([b, a])
    assert late_signature([a]) != late_signature([a, b])
    assert late_signature([a]) != late_signature([_obj("a", "2026-11-20T07:00:00", etag="f")])


@pytest.mark.parametrize(
    ("now", "grace", "expected"),
    [
        ("2026-11-03T23:59", 3, "2026-10"),  # October still in its grace period
        ("2026-11-04T00:00", 3, "2026-11"),  # October due: November is the open period
        ("2026-01-02T00:00", 3, "2025-12"),
        ("2026-11-20T00:00", 0, "2026-11"),
    ],
)
def test_first_open_period(now, grace, expected):
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    assert first_open_period(at, grace) == Period.parse(expected)


@pytest.mark.parametrize(
    ("day", "now", "expected"),
    [
        ("2026-11-10", "2026-11-20T09:00", ["2026-11"]),  # the open month itself
        ("2026-10-30", "2026-11-02T09:00", ["2026-10"]),  # October still draft (grace)
        ("2026-10-30", "2026-11-05T09:00", ["2026-10", "2026-11"]),  # adjustments on Nov
        ("2026-08-15", "2026-11-02T09:00", ["2026-08", "2026-10"]),  # Oct is still open
    ],
)
def test_months_to_refresh_after_late_usage(day, now, expected):
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    periods = months_to_refresh(date.fromisoformat(day), at, grace_days=3)
    assert [p.label for p in periods] == expected
