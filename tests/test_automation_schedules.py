"""Schedules evaluated at chosen times: which partitions they request, with which tags."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from usage_etl.defs.automation.schedules import daily_usage_schedule, monthly_invoices_schedule
from usage_etl.defs.resources import PriceBookResource
from usage_etl.settings import SAMPLE_PRICE_BOOK

GRACE_DAYS = 5  # not the sample's 3: shows the schedule reads grace_days from the price book


@pytest.fixture(scope="module")
def instance():
    """One persistent instance for the module (its setup is the slow part); tests that record
    materializations use months no other test looks at."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(scope="module")
def price_book(tmp_path_factory) -> PriceBookResource:
    book = yaml.safe_load(Path(SAMPLE_PRICE_BOOK).read_text())
    book["grace_days"] = GRACE_DAYS
    path = tmp_path_factory.mktemp("book") / "price_book.yaml"
    path.write_text(yaml.safe_dump(book))
    return PriceBookResource(path=str(path))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _daily(at: str):
    return daily_usage_schedule(dg.build_schedule_context(scheduled_execution_time=_at(at)))


def _invoices(instance, price_book, at: str) -> list[dg.RunRequest]:
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=_at(at), resources={"price_book": price_book}
    ) as context:  # exiting releases the resources it built
        return list(monthly_invoices_schedule(context))


def _requested(requests) -> list[tuple[str, str]]:
    return [(r.partition_key, r.tags["usage_etl/purpose"]) for r in requests]


@pytest.mark.parametrize(
    ("at", "day", "month"),
    [
        ("2026-10-06T06:00", "2026-10-05", "2026-10"),
        ("2026-11-01T06:00", "2026-10-31", "2026-10"),  # month boundary: bills into October
        ("2026-03-01T06:00", "2026-02-28", "2026-02"),
        ("2027-01-01T06:00", "2026-12-31", "2026-12"),  # year boundary
    ],
)
def test_daily_schedule_requests_yesterday(at, day, month):
    request = _daily(at)

    assert request.partition_key == day
    assert request.run_key == f"daily:{day}"
    assert request.tags["usage_etl/day"] == day
    assert request.tags["usage_etl/month"] == month
    assert request.tags["usage_etl/trigger"] == "schedule"


def test_daily_schedule_skips_before_the_first_partition():
    assert isinstance(_daily("2025-01-01T06:00"), dg.SkipReason)


def test_daily_schedule_runs_at_six_utc():
    assert daily_usage_schedule.cron_schedule == "0 6 * * *"
    assert daily_usage_schedule.execution_timezone == "UTC"
    assert monthly_invoices_schedule.cron_schedule == "0 8 * * *"


def test_invoice_schedule_refreshes_both_drafts_during_the_grace_period(instance, price_book):
    # October's grace ends 2026-11-06T00:00 (period_end 11-01 + 5 days).
    for at in ("2026-11-01T08:00", "2026-11-05T08:00"):
        assert _requested(_invoices(instance, price_book, at)) == [
            ("2026-10-01", "draft"),
            ("2026-11-01", "draft"),
        ]


def test_invoice_schedule_finalizes_the_previous_month_once_grace_has_passed(instance, price_book):
    requests = _invoices(instance, price_book, "2026-11-06T08:00")

    assert _requested(requests) == [("2026-10-01", "finalize"), ("2026-11-01", "draft")]
    assert [r.tags["usage_etl/month"] for r in requests] == ["2026-10", "2026-11"]


def test_invoice_schedule_stops_finalizing_once_the_month_is_final(instance, price_book):
    def publish(status: str) -> None:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "invoice_line_items", partition="2026-08-01", metadata={"status": status}
            )
        )

    publish("draft")  # a blocked finalization leaves a draft: keep asking
    assert _requested(_invoices(instance, price_book, "2026-09-07T08:00"))[0] == (
        "2026-08-01",
        "finalize",
    )
    publish("final")
    assert _requested(_invoices(instance, price_book, "2026-09-08T08:00")) == [
        ("2026-09-01", "draft")
    ]


def test_invoice_schedule_crosses_the_year(instance, price_book):
    assert _requested(_invoices(instance, price_book, "2027-01-03T08:00")) == [
        ("2026-12-01", "draft"),
        ("2027-01-01", "draft"),
    ]
    assert _requested(_invoices(instance, price_book, "2027-01-06T08:00")) == [
        ("2026-12-01", "finalize"),
        ("2027-01-01", "draft"),
    ]


def test_invoice_run_keys_make_each_request_once_per_day(instance, price_book):
    first = [r.run_key for r in _invoices(instance, price_book, "2026-11-02T08:00")]
    again = [r.run_key for r in _invoices(instance, price_book, "2026-11-02T08:00")]
    next_day = [r.run_key for r in _invoices(instance, price_book, "2026-11-03T08:00")]

    assert first == again
    assert len(set(first)) == len(first)
    assert not set(first) & set(next_day)
