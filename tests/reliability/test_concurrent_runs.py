"""Runs of the same day at the same time never double count or lose a file.

* Embedded engine: two `dagster job execute` runs of one day plus a backfill of three days,
  all started together; the single-writer guard makes them take turns; totals exact.
* Server semantics (no engine lock, any interleaving): a second complete run is injected at
  the riskiest moments of a first one (`usage_etl.crash_points.on_fault`), deterministically; both
  finish and the day is exact, including a late file only the second run saw.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

import dagster as dg
import pytest
from reliability_harness import (
    DAY,
    count_rows,
    daily_table,
    expected_daily,
    first_delivery,
    late_delivery,
    run_job,
    upload,
    valid_rows,
)

from usage_etl import crash_points
from usage_etl.invoicing.completeness import stale_days
from usage_etl.landing import Landing
from usage_etl.periods import Period
from usage_etl.s3 import s3_client
from usage_etl.usage.load import ingest_day
from usage_etl.usage.publish import publish_day, record_day_publication
from usage_etl.warehouse.client import is_embedded

DAYS = [DAY - timedelta(days=2), DAY - timedelta(days=1), DAY]


def _wait_for_step_start(instance: dg.DagsterInstance, runs: int, timeout: float = 300) -> None:
    """Readiness polling: until `runs` runs have started their first step (then they wait for
    the engine, or race for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = [
            r for r in instance.get_runs()
            if instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START)
        ]  # fmt: skip
        if len(started) >= runs:
            return
        time.sleep(0.2)
    raise AssertionError(f"{runs} runs did not start within {timeout:.0f}s")


@pytest.mark.skipif(
    not is_embedded(__import__("os").environ.get("USAGE_ETL_CLICKHOUSE_DSN", "chdb:")),
    reason="the single-writer guard is the embedded engine's",
)
def test_two_runs_of_a_day_and_a_backfill_at_once_are_exact(pipeline, landing):
    deliveries = {day: first_delivery(seed=day.day, day=day) for day in DAYS}
    for day, files in deliveries.items():
        upload(landing, files, day=day)
    late = late_delivery(deliveries[DAY], day=DAY)

    with dg.DagsterInstance.get() as instance, pipeline.open():  # holds the engine
        first = pipeline.start_cli("daily_usage", DAY.isoformat())
        second = pipeline.start_cli("daily_usage", DAY.isoformat())
        try:
            # The backfill runs while both command-line runs wait for the engine.
            backfill = [run_job("daily_usage", day.isoformat()) for day in DAYS]
            upload(landing, late)  # lands after the backfill read the day
            _wait_for_step_start(instance, runs=2)
        except BaseException:
            first.kill()
            second.kill()
            raise
    outputs = [p.communicate(timeout=600) for p in (first, second)]

    assert all(r.success for r in backfill)
    assert [first.returncode, second.returncode] == [0, 0], outputs[0][1][-2000:]
    with pipeline.open() as warehouse:
        for day in DAYS[:2]:
            assert daily_table(warehouse, day) == expected_daily(valid_rows(deliveries[day]))
        assert daily_table(warehouse) == expected_daily(valid_rows(deliveries[DAY] + late))
        # The late files were read by exactly one of the two runs.
        assert count_rows(warehouse, "ingest_objects", "position(object_key, '/B-') > 0") == len(
            late
        )
        publications = count_rows(warehouse, "usage_day_publications", "day = {d:Date}", {"d": DAY})
    assert publications == 3


class _Run:
    """One daily_usage run as its assets do it, without Dagster: ingest, then publish."""

    def __init__(self, warehouse, settings, name: str):
        self.warehouse, self.settings, self.load_id = warehouse, settings, f"{name}.run"

    def __call__(self, day: date = DAY) -> None:
        landing = Landing(s3_client(), self.settings.landing_bucket, self.settings.landing_prefix)
        ingest_day(self.warehouse, landing, day, load_id=self.load_id)
        report = publish_day(self.warehouse, day, self.load_id)
        record_day_publication(self.warehouse, report, self.load_id)


@pytest.mark.parametrize(
    "point",
    ["ingest.listed", "ingest.before_ledger", "publish.before_swap", "publish.before_record"],
)
def test_a_run_interleaved_with_another_at_any_point_is_exact(point, landing, warehouse, settings):
    first = first_delivery()
    upload(landing, first)
    late = late_delivery(first)

    def competing_run() -> None:
        upload(landing, late)  # a late delivery only the second run lists
        _Run(warehouse, settings, "second")()

    with crash_points.on_fault(point, competing_run):
        _Run(warehouse, settings, "first")()

    assert daily_table(warehouse) == expected_daily(valid_rows(first + late))
    assert stale_days(warehouse, Period.containing(DAY)) == []
