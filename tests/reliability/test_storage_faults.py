"""S3 outages: a dedicated SeaweedFS is stopped before and during a run, then restarted on the
same data and port. The run fails naming the prefix or object it could not read, publishes
nothing, and the re-run is exact."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from reliability_harness import (
    DAY,
    ONE_S3_ATTEMPT,
    count_rows,
    daily_table,
    expected_daily,
    failure_message,
    first_delivery,
    late_delivery,
    run_job,
    upload,
    valid_rows,
)
from rollup_files import Landing

from usage_etl import crash_points
from usage_etl.local_stack import SeaweedS3, start_seaweed
from usage_etl.usage import fetch, load, native


def _restart(holder: list[SeaweedS3]) -> SeaweedS3:
    old = holder[0]
    old.stop()
    port = urlsplit(old.endpoint).port
    holder[0] = start_seaweed(old.data_dir, old.access_key, old.secret_key, s3_port=port)
    return holder[0]


def _fail_fast(day: str):
    return run_job("daily_usage", day, retries=False, config=ONE_S3_ATTEMPT)


@pytest.mark.parametrize("reads", ["s3", "fetched"])
def test_s3_outage_fails_naming_what_it_read_and_the_rerun_is_exact(
    pipeline, own_s3, settings, monkeypatch, reads
):
    """`s3`: ClickHouse reads S3 itself (a server's path), S3 goes down after a first batch;
    `fetched`: the embedded engine's path, S3 goes down after the first object is fetched
    (one fetch thread, so the rest of the fetch fails), those files go the Python way."""
    monkeypatch.setattr(native, "FETCH", reads == "fetched")
    monkeypatch.setattr(fetch, "THREADS", 1)
    landing = Landing(own_s3[0], settings)
    first = first_delivery()
    upload(landing, first)
    before = expected_daily(valid_rows(first))

    own_s3[0].stop()  # down before the run: listing fails
    down = _fail_fast(DAY.isoformat())
    assert not down.success
    prefix = f"s3://landing/{settings.landing_prefix}/date={DAY.isoformat()}/"
    assert f"listing {prefix} failed" in failure_message(down)

    _restart(own_s3)  # same data, same port
    assert run_job("daily_usage", DAY.isoformat()).success
    late = late_delivery(first)
    upload(Landing(own_s3[0], settings), late)

    # Down in the middle of the run, after a first batch of late files was written.
    monkeypatch.setattr(load, "BATCH_ROWS", 20)
    monkeypatch.setattr(native, "CHUNK_ROWS", 20)
    point = "ingest.batch_flushed" if reads == "s3" else "ingest.fetched_one"
    with crash_points.on_fault(point, own_s3[0].stop):
        mid = _fail_fast(DAY.isoformat())

    assert not mid.success
    message = failure_message(mid)
    assert re.search(rf"reading {re.escape(prefix)}\S+/B-\S+ failed", message), message
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == before  # nothing partial published
        assert count_rows(warehouse, "usage_day_publications") == 1
        decided = count_rows(warehouse, "ingest_objects", "position(object_key, '/B-') > 0")
    # s3: down after a first batch was written; fetched: down during the fetch, before any
    # batch (every late file has a bad row, so Python reads each, from its copy if it has one).
    assert (0 if reads == "fetched" else 1) <= decided < len(late)

    _restart(own_s3)
    rerun = run_job("daily_usage", DAY.isoformat())

    assert rerun.success, failure_message(rerun)
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == expected_daily(valid_rows(first + late))
