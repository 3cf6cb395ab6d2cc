"""SIGKILL a real range run (what a backfill launches: one run, several days) between two days'
publishes, one day after another and two days at once; re-running the range publishes every
day exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import timedelta

import pytest
from reliability_harness import (
    DAGSTER,
    DAY,
    REPO,
    daily_table,
    expected_daily,
    first_delivery,
    hourly_rolled_up,
    late_delivery,
    upload,
    valid_rows,
)

from usage_etl.crash_points import FAULT_ENV

DAYS = [DAY + timedelta(days=i) for i in range(3)]


def _range_run(first, last, parallel_days: int) -> subprocess.Popen:
    """`dagster job execute` of a range of days: the run a backfill launches (its tags)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["USAGE_ETL_RANGE_PARALLEL_DAYS"] = str(parallel_days)
    env.pop(FAULT_ENV, None)
    args = [DAGSTER, "job", "execute", "-m", "usage_etl.definitions", "-j", "daily_usage"]
    span = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    args += ["--tags", json.dumps(span)]
    return subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


# One day after another (USAGE_ETL_RANGE_PARALLEL_DAYS=1) is the slow variant: CI runs the
# default, two days at a time; the failing-day test covers both in process.
@pytest.mark.parametrize("parallel_days", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_range_run_killed_between_days_then_rerun_is_exact(pipeline, landing, parallel_days):
    delivered = {}
    for i, day in enumerate(DAYS):
        files = first_delivery(seed=10 + i, day=day)
        files += late_delivery(files, seed=20 + i, day=day)
        upload(landing, files, day=day)
        delivered[day] = expected_daily(valid_rows(files))

    run = _range_run(DAYS[0], DAYS[-1], parallel_days)
    seen = []
    try:
        for line in run.stderr:  # the run's own log, read as it is written
            seen.append(line)
            if f"published {DAYS[0]}" in line:
                os.kill(run.pid, signal.SIGKILL)  # the OOM killer's way: no cleanup
                break
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == -signal.SIGKILL, "".join(seen[-40:])

    with pipeline.open() as warehouse:
        assert daily_table(warehouse, DAYS[0]) == delivered[DAYS[0]]
        later = {d: daily_table(warehouse, d) for d in DAYS[1:]}
        if parallel_days == 1:
            # The later days were never swapped in: readers see nothing rather than half a day.
            assert list(later.values()) == [[], []]
        else:
            # The second day was published beside the first (and the third may have begun):
            # each later day is wholly in or not in at all, never half a day.
            for day, rows in later.items():
                assert rows in ([], delivered[day]), day

    rerun = _range_run(DAYS[0], DAYS[-1], parallel_days)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    with pipeline.open() as warehouse:
        for day in DAYS:
            assert daily_table(warehouse, day) == delivered[day], day
            assert hourly_rolled_up(warehouse, day) == delivered[day], day
