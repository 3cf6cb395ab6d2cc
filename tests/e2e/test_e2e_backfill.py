"""End to end: a partition backfill launched through the webserver's GraphQL API (the call the
UI makes) is run by the daemon on a PostgreSQL instance as ONE run over the range of days (the
daily assets' BackfillPolicy.single_run), day by day, and lands the exact deduplicated usage
in ClickHouse, each day materialized and checked as its own partition."""

from __future__ import annotations

from datetime import date

import pytest
from backfill import (
    check_partitions,
    launch_asset_backfill,
    partition_statuses,
    tags_of,
    wait_for_backfill,
)
from e2e_stack import stack_settings, stack_warehouse
from rollup_files import Landing, ndjson_gz_bytes, parquet_bytes, rollup, usage_rows

# One worker runs every e2e test: they share one webserver + daemon (tests/e2e/conftest.py).
pytestmark = pytest.mark.xdist_group("dagster_stack")

# Long past: never in the late-file sensor's look-back, never the browser test's days.
DAYS = [date(2025, 3, 10), date(2025, 3, 11)]
BACKFILL_TIMEOUT = 420


def _drop_files(landing: Landing, day: date, scale: int) -> None:
    """e1 is re-emitted with a correction (latest emitted_at wins); e2 is delivered twice."""
    e1 = f"{day}-e1"
    e2 = rollup(f"{day}-e2", day=day, account_id="acct-2", bytes=10, request_count=1)
    landing.put("a.parquet", parquet_bytes([rollup(e1, day=day, bytes=scale), e2]), day=day)
    corrected = rollup(e1, day=day, bytes=scale + 500, emitted_minute=30)
    landing.put("b.ndjson.gz", ndjson_gz_bytes([corrected, e2]), day=day, hour=3)


def _expected(scale: int) -> list[tuple]:
    dims = ("proj-1", "node-a", "egress", "download", "xcode", "public_internet")
    return [("acct-1", *dims, scale + 500, 10), ("acct-2", *dims, 10, 1)]


def test_backfill_of_days_through_graphql_lands_exact_usage(dagster_stack, s3_server):
    landing = Landing(s3_server, stack_settings(dagster_stack))
    for i, day in enumerate(DAYS):
        _drop_files(landing, day, scale=1000 * (i + 1))

    backfill_id = launch_asset_backfill(dagster_stack, [d.isoformat() for d in DAYS])
    state = wait_for_backfill(dagster_stack, backfill_id, BACKFILL_TIMEOUT)

    assert state["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), state
    assert state["isAssetBackfill"]
    (run,) = state["runs"]  # one run for the whole range: one process start, one engine open
    tags = tags_of(run)
    assert run["status"] == "SUCCESS"
    assert tags["usage_etl/trigger"] == "operator_backfill"
    span = (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
    assert span == (DAYS[0].isoformat(), DAYS[-1].isoformat())
    # Each day is its own materialization and its own exactness check result.
    per_day = partition_statuses(dagster_stack, "usage_daily")
    assert {d.isoformat() for d in DAYS} <= per_day["materialized"], per_day
    exact = check_partitions(dagster_stack, run["runId"], "usage_daily_is_exact")
    assert exact == {d.isoformat(): True for d in DAYS}

    with stack_warehouse(dagster_stack) as warehouse:
        for i, day in enumerate(DAYS):
            assert usage_rows(warehouse, day.isoformat()) == _expected(1000 * (i + 1)), day
