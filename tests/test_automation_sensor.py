"""The late-file sensor on real SeaweedFS and chDB, against a persistent Dagster instance."""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from rollup_files import Landing, parquet_bytes, rollup, run_daily, usage_rows

from usage_etl.defs.automation.sensors import invoices_after_late_usage, late_rollup_files
from usage_etl.defs.resources import ClockResource, LandingResource, PriceBookResource
from usage_etl.periods import Period

DAY = datetime.now(UTC).date() - timedelta(days=3)  # inside the sensor's look-back window


@pytest.fixture
def instance(usage_env):
    with dg.instance_for_test(temp_dir=usage_env["DAGSTER_HOME"]) as instance:
        yield instance


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


@pytest.fixture
def tick(instance, monkeypatch):
    """Evaluate the sensor the way the daemon does, carrying the cursor between ticks. The
    ClickHouse DSN points nowhere meanwhile: the sensor must not need ClickHouse."""
    monkeypatch.setenv("USAGE_ETL_LATE_DAYS_PER_TICK", "35")  # whole window in one tick
    state = {"cursor": None}

    def evaluate() -> list[dg.RunRequest]:
        with monkeypatch.context() as patch:
            patch.setenv("USAGE_ETL_CLICKHOUSE_DSN", "http://127.0.0.1:9/unreachable")
            with dg.build_sensor_context(
                instance=instance, cursor=state["cursor"], resources={"landing": LandingResource()}
            ) as context:
                result = late_rollup_files(context)
        state["cursor"] = result.cursor
        return list(result.run_requests or [])

    return evaluate


def _put(landing: Landing, name: str, event_id: str, day: date = DAY) -> float:
    """Upload one rollup file; return its S3 LastModified."""
    key = landing.put(name, parquet_bytes([rollup(event_id, day=day, bytes=100)]), day=day)
    head = landing.client.head_object(Bucket=landing.bucket, Key=key)
    return head["LastModified"].timestamp()


def _next_second_after(last_modified: float) -> None:
    """S3 stamps objects to the second: a run created in the same second as an object counts
    that object as possibly unseen. Wait for the clock to pass it (bounded by one second)."""
    while time.time() < math.floor(last_modified) + 1:
        time.sleep(0.02)


def _run(instance, day: date, tags: dict[str, str] | None = None):
    from usage_etl.definitions import defs

    job = defs().resolve_job_def("daily_usage")
    return job.execute_in_process(partition_key=day.isoformat(), instance=instance, tags=tags)


def test_a_late_file_requests_exactly_one_rerun_of_its_day(instance, landing, tick, warehouse):
    _next_second_after(_put(landing, "first.parquet", "e1"))
    assert run_daily(DAY.isoformat(), instance).success
    # A day with files but never materialized is the schedule's (or a backfill's) business.
    _put(landing, "unrun.parquet", "u1", day=DAY - timedelta(days=1))

    assert tick() == []  # nothing landed after the run

    _put(landing, "late.parquet", "e2")
    requests = tick()

    assert [r.partition_key for r in requests] == [DAY.isoformat()]
    request = requests[0]
    assert request.run_key.startswith(f"late:{DAY.isoformat()}:")
    assert request.tags["usage_etl/trigger"] == "late_file"
    assert request.tags["usage_etl/day"] == DAY.isoformat()
    assert request.tags["usage_etl/month"] == Period.containing(DAY).label
    assert tick() == []  # the same arrival never requests twice

    # Another arrival before the re-run happened (the re-run starts in a later second than it).
    _next_second_after(_put(landing, "later.parquet", "e3"))
    again = tick()
    assert [r.partition_key for r in again] == [DAY.isoformat()]
    assert again[0].run_key != request.run_key

    rerun = _run(instance, DAY, again[0].tags)
    assert rerun.success
    assert usage_rows(warehouse, DAY.isoformat())[0][-2:] == (300, 30)
    assert tick() == []  # the re-run saw every file


def test_a_day_with_a_run_waiting_to_start_is_left_to_that_run(instance, landing, tick):
    _next_second_after(_put(landing, "first.parquet", "e1"))
    assert run_daily(DAY.isoformat(), instance).success
    _next_second_after(_put(landing, "late.parquet", "e2"))
    # A run for the day was created after the file landed (not started yet): it will list the
    # prefix when it starts, so the sensor leaves the day alone.
    instance.create_run_for_job(job_def=_daily_job(), tags={"dagster/partition": DAY.isoformat()})

    assert tick() == []


def _daily_job():
    from usage_etl.definitions import defs

    return defs().resolve_job_def("daily_usage")


def test_a_successful_late_file_rerun_refreshes_the_invoice_months(instance, landing, warehouse):
    _put(landing, "first.parquet", "e1")
    scheduled = _run(instance, DAY, {"usage_etl/trigger": "schedule"})
    late = _run(instance, DAY, {"usage_etl/trigger": "late_file"})
    own = Period.containing(DAY)
    later = own.next().next()  # as of then, the day's month is final: adjustments go to `later`
    as_of = datetime(later.start.year, later.start.month, 11, tzinfo=UTC)

    def evaluate(result):
        with dg.build_run_status_sensor_context(
            sensor_name="invoices_after_late_usage",
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={
                "clock": ClockResource(as_of=as_of.isoformat()),
                "price_book": PriceBookResource(),
            },
        ) as context:
            return invoices_after_late_usage(context)

    assert isinstance(evaluate(scheduled), dg.SkipReason)
    requests = evaluate(late)
    assert [r.partition_key for r in requests] == [own.start.isoformat(), later.start.isoformat()]
    assert {r.tags["usage_etl/trigger"] for r in requests} == {"late_usage"}
    assert all(late.run_id in r.run_key for r in requests)
