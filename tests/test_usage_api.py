"""The usage read API (`usage_etl.usage.read_api`) and `usage-etl usage`, on known usage.

Fixture rows go into `usage_hourly`; `usage_daily` is derived from them exactly as the publish
step does (a GROUP BY of the hourly rows), so hourly and daily reads must agree. Expected values
are computed from the fixture rows, never copied from output.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from rollup_files import Landing, parquet_bytes, rollup, run_daily
from typer.testing import CliRunner

from usage_etl.cli import app
from usage_etl.rollups.schema import USAGE_DIMENSIONS
from usage_etl.usage.read_api import (
    Granularity,
    Totals,
    UsageQuery,
    Window,
    parse_window,
    usage_report,
)


@dataclass(frozen=True)
class Row:
    hour: datetime
    region: str
    node_id: str
    direction: str
    artifact_kind: str
    bytes: int
    requests: int
    project_id: str = "proj-1"
    account_id: str = "acme"
    network_path: str = "public_internet"
    operation: str = "download"


PRIVATE = "private_network"


def at(day: int, hour: int, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


ROWS = [
    Row(at(5, 3), "eu-west-1", "node-a", "egress", "xcode", 1_000, 10),
    Row(at(5, 3), "eu-west-1", "node-a", "ingress", "xcode", 300, 3, operation="upload"),
    Row(at(5, 5), "us-east-1", "node-b", "egress", "gradle", 5_000, 7, project_id="proj-2"),
    Row(at(5, 5), "us-east-1", "node-b", "egress", "script", 200, 1, project_id=""),
    Row(at(5, 20), "eu-west-1", "node-c", "egress", "xcode", 700, 2, network_path=PRIVATE),
    Row(at(4, 3), "eu-west-1", "node-a", "egress", "xcode", 400, 4),
    Row(at(25, 8, month=9), "us-east-1", "node-b", "egress", "gradle", 900, 9),
    # Another account on the same nodes and hours: must never leak into acme's numbers.
    Row(at(5, 3), "eu-west-1", "node-a", "egress", "xcode", 10**12, 10**6, account_id="other"),
]  # fmt: skip


def publish(warehouse, rows: list[Row]) -> None:
    warehouse.insert_rows(
        "usage_hourly",
        [
            [r.hour.date(), r.hour, *(getattr(r, d) for d in USAGE_DIMENSIONS), r.bytes,
             r.requests, 1, 1, 0]
            for r in rows
        ],
        ["day", "hour", *USAGE_DIMENSIONS, "bytes", "request_count", "rollups", "versions",
         "conflicts"],
    )  # fmt: skip
    dims = ", ".join(USAGE_DIMENSIONS)
    warehouse.command(
        f"INSERT INTO {warehouse.table('usage_daily')} SELECT day, {dims}, sum(bytes), "
        f"sum(request_count) FROM {warehouse.table('usage_hourly')} GROUP BY day, {dims}"
    )


def expected(rows, start: datetime, end: datetime, keep=lambda r: True) -> Totals:
    chosen = [r for r in rows if r.account_id == "acme" and start <= r.hour < end and keep(r)]
    return Totals(
        sum(r.bytes for r in chosen if r.direction == "egress"),
        sum(r.bytes for r in chosen if r.direction == "ingress"),
        sum(r.requests for r in chosen),
    )


@pytest.fixture
def published(warehouse):
    publish(warehouse, ROWS)
    return warehouse


# -- windows ------------------------------------------------------------------------------------


def test_relative_ranges_end_at_the_last_complete_hour_or_day():
    now = datetime(2026, 10, 6, 10, 30, tzinfo=UTC)
    day = parse_window("24h", now)
    assert (day.start, day.end, day.granularity) == (at(5, 10), at(6, 10), Granularity.hour)
    assert len(day.buckets()) == 24
    week = parse_window("7d", now)
    assert (week.start, week.end, week.granularity) == (at(29, 0, 9), at(6, 0), Granularity.day)
    assert week.previous() == Window(at(22, 0, 9), at(29, 0, 9))
    assert len(parse_window("30d", now).buckets()) == 30
    for window in (day, week):  # the label is a range the command takes back
        assert parse_window(window.label) == window


def test_explicit_ranges_take_dates_inclusive_or_times_exclusive():
    days = parse_window("2026-10-01..2026-10-07")
    assert (days.start, days.end, len(days.buckets())) == (at(1, 0), at(8, 0), 7)
    one_day = parse_window("2026-10-05..2026-10-05")
    assert one_day.granularity is Granularity.hour and len(one_day.buckets()) == 24
    hours = parse_window("2026-10-05T06:00Z..2026-10-05T18:00:00+00:00")
    assert (hours.start, hours.end, hours.previous().start) == (at(5, 6), at(5, 18), at(4, 18))


@pytest.mark.parametrize(
    "text",
    [
        "2026-10-05T06:30Z..2026-10-05T08:00Z",  # not on a whole hour
        "2026-10-05T06:00Z..2026-10-07T06:00Z",  # > 24 h but not whole days
        "2026-10-07..2026-10-05",  # ends before it starts
        "25h",
        "0d",
        "last week",
    ],
)
def test_bad_ranges_are_refused(text):
    with pytest.raises(ValueError):
        parse_window(text, datetime(2026, 10, 6, tzinfo=UTC))


# -- the read API -------------------------------------------------------------------------------


def test_24h_totals_trend_and_zero_filled_hourly_series(published):
    window = parse_window("24h", datetime(2026, 10, 6, 0, 20, tzinfo=UTC))
    report = usage_report(published, UsageQuery("acme", window))

    assert report.totals == expected(ROWS, at(5, 0), at(6, 0))
    assert report.previous_totals == expected(ROWS, at(4, 0), at(5, 0))
    egress, ingress, requests = report.trend()
    assert egress.delta == report.totals.egress_bytes - report.previous_totals.egress_bytes
    assert egress.percent == (Decimal(egress.delta * 100) / 400).quantize(Decimal("0.1"))
    assert ingress.previous == 0 and ingress.percent is None  # no baseline, no percentage
    assert requests.current == 23

    # 24 hourly buckets for each region that had traffic, zeros where there was none.
    assert report.regions == ["eu-west-1", "us-east-1"]
    assert [p.bucket for p in report.series[::2]] == window.buckets()
    points = {(p.bucket, p.region): p.totals for p in report.series}
    assert len(points) == 48
    assert points[at(5, 3), "eu-west-1"] == Totals(1_000, 300, 13)
    assert points[at(5, 4), "eu-west-1"] == Totals()
    assert points[at(5, 3), "us-east-1"] == Totals()
    assert sum(p.totals.egress_bytes for p in report.series) == report.totals.egress_bytes


def test_7d_reads_daily_buckets_zero_filled_with_the_previous_week(published):
    window = parse_window("7d", datetime(2026, 10, 6, 10, 30, tzinfo=UTC))
    report = usage_report(published, UsageQuery("acme", window))

    assert report.window.granularity is Granularity.day
    assert report.totals == expected(ROWS, at(29, 0, 9), at(6, 0))
    assert report.previous_totals == expected(ROWS, at(22, 0, 9), at(29, 0, 9)) == Totals(900, 0, 9)
    points = {(p.bucket.date(), p.region): p.totals for p in report.series}
    assert len(points) == 7 * 2
    assert points[date(2026, 10, 4), "eu-west-1"] == Totals(400, 0, 4)
    assert points[date(2026, 10, 5), "eu-west-1"] == Totals(1_700, 300, 15)
    assert points[date(2026, 10, 5), "us-east-1"] == Totals(5_200, 0, 8)
    assert points[date(2026, 10, 1), "us-east-1"] == Totals()


def test_nodes_sorted_by_combined_bytes_and_kind_breakdown(published):
    report = usage_report(published, UsageQuery("acme", parse_window("2026-10-05..2026-10-05")))
    assert [(n.node_id, n.region, n.totals.total_bytes) for n in report.nodes] == [
        ("node-b", "us-east-1", 5_200),
        ("node-a", "eu-west-1", 1_300),
        ("node-c", "eu-west-1", 700),
    ]
    kinds = {k.artifact_kind: k.totals for k in report.kinds}
    assert [k.artifact_kind for k in report.kinds] == ["gradle", "xcode", "script"]
    assert kinds["xcode"] == expected(
        ROWS, at(5, 0), at(6, 0), lambda r: r.artifact_kind == "xcode"
    )


@pytest.mark.parametrize(
    ("project", "kind", "keep"),
    [
        ("proj-1", None, lambda r: r.project_id == "proj-1"),
        ("", None, lambda r: r.project_id == ""),  # project-less traffic only
        (None, "gradle", lambda r: r.artifact_kind == "gradle"),
        ("proj-2", "xcode", lambda r: False),
    ],
)
def test_project_and_kind_filters(published, project, kind, keep):
    window = parse_window("2026-10-04..2026-10-05")
    report = usage_report(published, UsageQuery("acme", window, project, kind))
    assert report.totals == expected(ROWS, at(4, 0), at(6, 0), keep)
    assert sum(n.totals.requests for n in report.nodes) == report.totals.requests


def test_an_unknown_account_reads_zeros_and_an_empty_series(published):
    report = usage_report(published, UsageQuery("nobody", parse_window("2026-10-05..2026-10-05")))
    assert report.totals == report.previous_totals == Totals()
    assert report.series == [] and report.nodes == [] and report.kinds == []


def test_reads_what_the_daily_usage_job_published(s3_server, warehouse, settings):
    """End to end: rollup files -> daily_usage -> read API, duplicates counted once."""
    landing = Landing(s3_server, settings)
    first = [rollup("e1", hour=2, bytes=111), rollup("e2", hour=7, node_id="node-b", bytes=222)]
    landing.put("a.parquet", parquet_bytes(first[:1]), hour=2)
    landing.put("b.parquet", parquet_bytes(first[1:]), hour=7, node="node-b")
    landing.put("again.parquet", parquet_bytes(first[:1]), hour=2)  # re-delivery
    assert run_daily("2026-10-05").success

    report = usage_report(warehouse, UsageQuery("acct-1", parse_window("2026-10-05..2026-10-05")))
    assert report.totals == Totals(333, 0, 20)
    series = {p.bucket: p.totals.egress_bytes for p in report.series}
    assert (series[at(5, 2)], series[at(5, 7)], series[at(5, 3)]) == (111, 222, 0)


# -- the command --------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, ["usage", *args])


@pytest.fixture
def as_of(published, monkeypatch):
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-10-06T10:30:00Z")


def test_command_json_is_the_report(as_of):
    result = invoke("acme", "--range", "7d", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["window"] == {
        "start": "2026-09-29T00:00:00Z", "end": "2026-10-06T00:00:00Z", "granularity": "day",
    }  # fmt: skip
    totals = expected(ROWS, at(29, 0, 9), at(6, 0))
    assert payload["totals"]["egress_bytes"] == totals.egress_bytes
    egress = payload["trend"][0]
    assert (egress["previous"], egress["change"]) == (900, totals.egress_bytes - 900)
    assert len(payload["series"]) == 14
    assert [n["node_id"] for n in payload["nodes"]] == ["node-b", "node-a", "node-c"]


def test_command_csv_filters_by_project_none(as_of):
    result = invoke("acme", "--project", "none", "--range", "2026-10-05..2026-10-05", "--format",
                    "csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    by_section = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert by_section["total"][0]["egress_bytes"] == "200"
    assert len(by_section["series"]) == 24  # one region, zero-filled hours
    assert [r["artifact_kind"] for r in by_section["kind"]] == ["script"]


def test_command_table_and_chart(as_of, tmp_path):
    chart = tmp_path / "usage.png"
    result = invoke("acme", "--range", "24h", "--as-of", "2026-10-06T00:20:00Z", "--chart",
                    str(chart))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Per node" in result.output and "node-b" in result.output
    assert "+1,625.0%" in result.output  # egress 6,900 against 400 the day before
    data = chart.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_command_refuses_a_bad_range(usage_env):
    result = invoke("acme", "--range", "yesterday")
    assert result.exit_code != 0 and "FROM..TO" in result.output


def test_relative_ranges_end_at_the_latest_published_data_without_as_of(published):
    published.close()  # the command opens the embedded engine itself
    latest = max(r.hour for r in ROWS)
    week = invoke("acme", "--range", "7d", "--format", "json")
    assert week.exit_code == 0, week.output
    window = json.loads(week.stdout)["window"]
    assert window["end"] == f"{latest.date() + timedelta(days=1)}T00:00:00Z"
    day = json.loads(invoke("acme", "--range", "24h", "--format", "json").stdout)["window"]
    assert day["end"] == (latest + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    pinned = invoke("acme", "--range", "7d", "--format", "json", "--as-of", "2026-10-03T00:00:00Z")
    assert json.loads(pinned.stdout)["window"]["end"] == "2026-10-03T00:00:00Z"


def test_unknown_account_is_an_error_with_close_matches(published):
    published.close()
    result = invoke("acmee", "--range", "7d")
    assert result.exit_code == 2
    assert "unknown account 'acmee'; did you mean acme" in result.stderr
    assert not result.stdout
