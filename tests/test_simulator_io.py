"""The simulator against real parts: SeaweedFS for uploads, chDB for cache events, the CLI."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
from typer.testing import CliRunner

from usage_etl.cli import app
from usage_etl.simulator import Fault, FaultSpec, FleetSpec, Simulator
from usage_etl.simulator.spec import FAULT_OPTIONS_HELP
from usage_etl.warehouse.client import open_warehouse

DAY = date(2026, 10, 5)
FLEET = FleetSpec(nodes=3, accounts=10, rows_per_day=600, seed=5)
FAULTS = "default,late_hours=2,stray_rate=0.2,redelivery_rate=0.2,correction_rate=0.05"


def listed(s3, settings) -> dict[str, int]:
    paginator = s3.get_paginator("list_objects_v2")
    prefix = settings.landing_prefix + "/"
    return {
        o["Key"][len(prefix) :]: o["Size"]
        for page in paginator.paginate(Bucket=settings.landing_bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    }


def test_upload_delivers_on_time_files_then_late_ones_on_request(s3_server, settings):
    day = Simulator(FLEET, FaultSpec.parse(FAULTS)).generate_day(DAY)
    assert day.late_files and day.with_fault(Fault.STRAY)
    s3 = s3_server.client()
    bucket, prefix = settings.landing_bucket, settings.landing_prefix
    sent = Simulator.upload(day.files, s3, bucket, prefix)
    assert sent == len(day.on_time_files)
    assert listed(s3, settings) == {f.key: len(f.body) for f in day.on_time_files}
    sample = day.on_time_files[0]
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{sample.key}")["Body"].read()
    assert body == sample.body
    Simulator.upload(day.late_files, s3, bucket, prefix, include_late=True)
    assert set(listed(s3, settings)) == {f.key for f in day.files}


def test_cache_events_land_in_clickhouse_as_generated(warehouse, settings):
    day = Simulator(FLEET, FaultSpec(cache_event_drop_rate=0.1)).generate_day(DAY)
    written = Simulator.write_cache_events(warehouse, day, settings.cache_events_table)
    assert written == day.cache_events.num_rows > 0
    rows = warehouse.query_rows(
        f"SELECT action, count(), sum(size_bytes), uniqExact(event_id), min(toDate(occurred_at)),"
        f" max(toDate(occurred_at)) FROM {warehouse.table(settings.cache_events_table)}"
        " GROUP BY action ORDER BY action"
    )
    events = pl.from_arrow(day.cache_events)
    for action, count, size, unique, first, last in rows:
        mine = events.filter(pl.col("action") == action)
        assert (count, size, unique) == (mine.height, mine["size_bytes"].sum(), mine.height)
        assert first == last == DAY
    assert {r[0] for r in rows} == {"upload", "download"}


def run_cli(*args: str):
    result = CliRunner().invoke(app, ["simulate", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def test_cli_help_documents_every_option():
    text = run_cli("--help").output
    options = ["--start", "--end", "--nodes", "--accounts", "--rows-per-day", "--max-projects"]
    options += ["--format", "--seed", "--faults", "--late", "--no-late", "--only-late"]
    options += ["--cache-events", "--no-cache-events", "--truth-dir", "--landing-url"]
    options += ["--dry-run", "--workers", "--progress"]
    for option in options:
        assert option in text
    for name in FAULT_OPTIONS_HELP:
        assert name in text


def test_cli_writes_files_events_and_truth_then_late_files(s3_server, settings, tmp_path):
    args = ["--start", "2026-10-05", "--nodes", "3", "--accounts", "10", "--rows-per-day", "600"]
    args += ["--seed", "5", "--faults", FAULTS, "--no-progress", "--truth-dir", str(tmp_path)]
    run_cli(*args)
    day = Simulator(FLEET, FaultSpec.parse(FAULTS)).generate_day(DAY)
    s3 = s3_server.client()
    assert listed(s3, settings) == {f.key: len(f.body) for f in day.on_time_files}
    truth = pl.read_csv(tmp_path / "date=2026-10-05" / "usage_daily.csv", try_parse_dates=True)
    expected = day.expected_usage_daily()
    assert truth["bytes"].sum() == expected["bytes"].sum() and truth.height == expected.height
    summary = json.loads((tmp_path / "date=2026-10-05" / "summary.json").read_text())
    assert summary["expected_quarantine"] == day.expected_quarantine()
    run_cli(*args, "--only-late")  # the late files arrive; cache events are not duplicated
    assert set(listed(s3, settings)) == {f.key for f in day.files}
    all_truth = pl.read_csv(tmp_path / "date=2026-10-05" / "usage_daily.csv")
    assert all_truth["bytes"].sum() == day.expected_usage_daily(day.files)["bytes"].sum()
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        count, size = warehouse.query_rows(
            f"SELECT count(), sum(size_bytes) FROM {warehouse.table('cache_events')}"
        )[0]
    assert (count, size) == (
        day.cache_events.num_rows,
        sum(day.cache_events["size_bytes"].to_pylist()),
    )


def test_cli_dry_run_touches_nothing(s3_server, settings, tmp_path):
    run_cli("--start", "2026-10-05", "--nodes", "1", "--rows-per-day", "50", "--dry-run",
            "--no-progress", "--truth-dir", str(tmp_path))  # fmt: skip
    assert listed(s3_server.client(), settings) == {}
    assert (tmp_path / "date=2026-10-05" / "usage_daily.csv").exists()
