"""ClickHouse faults: a server that refuses connections, an embedded engine held by another
process, a disk that fills up mid-run. Each fails the run with a message an operator can act
on (and no password in it), publishes nothing, and the run succeeds once the fault is gone."""

from __future__ import annotations

import os
import subprocess

import pytest
from engine_holder import engine_held_by_another_process
from reliability_harness import (
    DAY,
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

from usage_etl.local_stack import free_port
from usage_etl.warehouse.client import is_embedded

PASSWORD = "pw-refused-7Hq2"


def test_a_refusing_server_dsn_fails_clearly_without_its_password(landing, usage_env, monkeypatch):
    port = free_port()
    monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", f"http://etl:{PASSWORD}@127.0.0.1:{port}")
    upload(landing, first_delivery())

    result = run_job("daily_usage", DAY.isoformat(), retries=False)

    assert not result.success
    message = failure_message(result)
    assert f"cannot connect to ClickHouse at http://etl:***@127.0.0.1:{port}" in message
    assert PASSWORD not in message


embedded_only = pytest.mark.skipif(
    not is_embedded(os.environ.get("USAGE_ETL_CLICKHOUSE_DSN", "chdb:")),
    reason="the single-writer guard and the engine's own disk exist for chDB only",
)


@embedded_only
def test_an_engine_held_by_another_process_fails_naming_the_holder(pipeline, landing, monkeypatch):
    first = first_delivery()
    upload(landing, first)
    monkeypatch.setenv("USAGE_ETL_CHDB_LOCK_TIMEOUT_SECONDS", "1")
    with engine_held_by_another_process(pipeline.dsn) as holder:
        busy = run_job("daily_usage", DAY.isoformat(), retries=False)

    assert not busy.success
    assert f"held by another process (pid {holder.pid})" in failure_message(busy)
    assert run_job("daily_usage", DAY.isoformat()).success
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == expected_daily(valid_rows(first))


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB filesystem of the test's own for the engine (tmpfs; needs mount rights)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _grow(mount_point, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


@embedded_only
def test_a_full_disk_fails_the_run_loudly_and_publishes_nothing(
    pipeline, landing, small_disk, monkeypatch
):
    pipeline.dsn = f"chdb://{small_disk / 'engine'}"
    monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", pipeline.dsn)
    first = first_delivery()
    upload(landing, first)
    assert run_job("daily_usage", DAY.isoformat()).success
    # Late files whose rows do not compress: far more than the disk has left.
    late = late_delivery(first, rows_per_file=2000)
    for f in late:
        for row in f.rows:
            if row["event_id"].startswith("B-"):  # new rollups only: keep re-deliveries equal
                row["operation"] = os.urandom(3000).hex()
    upload(landing, late)

    full = run_job("daily_usage", DAY.isoformat(), retries=False)

    assert not full.success
    message = failure_message(full)
    assert "NOT_ENOUGH_SPACE" in message or "No space left on device" in message, message
    _grow(small_disk, "512m")  # the operator frees space
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == expected_daily(valid_rows(first))
        assert count_rows(warehouse, "usage_day_publications") == 1
    rerun = run_job("daily_usage", DAY.isoformat())
    assert rerun.success, failure_message(rerun)
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == expected_daily(valid_rows(first + late))
