"""Bounded waits (issue 21): a dependency that accepts connections and never answers fails the
step within the documented bound, naming the endpoint, and frees the run; permanent faults fail
on the first attempt with their cause in one line.

Real processes: a SeaweedFS of the test's own is frozen with SIGSTOP in the middle of a run and
thawed with SIGCONT; a ClickHouse "server" is a listening socket that never answers.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import dagster as dg
import pytest
from engine_holder import engine_held_by_another_process
from reliability_harness import (
    DAY,
    daily_table,
    expected_daily,
    failure_message,
    first_delivery,
    run_job,
    upload,
    valid_rows,
)
from rollup_files import Landing

from usage_etl import crash_points
from usage_etl.warehouse.client import is_embedded

# Short bounds so a frozen dependency costs seconds, not minutes; the arithmetic that bounds a
# step is the same as with the defaults (docs/operations.md, "Timeouts and failures").
SHORT = {
    "USAGE_ETL_S3_CONNECT_TIMEOUT_SECONDS": "1",
    "USAGE_ETL_S3_READ_TIMEOUT_SECONDS": "2",
    "USAGE_ETL_S3_MAX_ATTEMPTS": "2",
    "USAGE_ETL_CLICKHOUSE_CONNECT_TIMEOUT_SECONDS": "1",
    "USAGE_ETL_CLICKHOUSE_RECEIVE_TIMEOUT_SECONDS": "2",
    "USAGE_ETL_RETRY_BUDGET_SECONDS": "20",
}


def _retries(result) -> int:
    return sum(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


def _step_failures(result) -> list[str]:
    return [
        event.step_failure_data.error.message.strip()
        for event in result.all_events
        if event.is_step_failure
    ]


# USAGE_ETL_TEST_DEFAULT_BOUNDS=1 runs the stall tests with the shipped defaults instead, to
# measure the documented ~2 min bound (slow: minutes per test).
DEFAULT_BOUNDS = bool(os.environ.get("USAGE_ETL_TEST_DEFAULT_BOUNDS"))
LIMIT = 150 if DEFAULT_BOUNDS else 60


@pytest.fixture
def short_bounds(monkeypatch) -> None:
    if DEFAULT_BOUNDS:
        return
    for key, value in SHORT.items():
        monkeypatch.setenv(key, value)


def test_a_frozen_s3_fails_the_step_within_the_bound_and_the_rerun_is_exact(
    pipeline, own_s3, settings, short_bounds
):
    server = own_s3[0]
    first = first_delivery()
    upload(Landing(server, settings), first)
    frozen = []

    def freeze() -> None:  # after listing: the reads (ClickHouse's and boto3's) hang
        os.killpg(server.process.pid, signal.SIGSTOP)
        frozen.append(True)

    try:
        started = time.monotonic()
        with crash_points.on_fault("ingest.listed", freeze):
            stalled = run_job("daily_usage", DAY.isoformat())
        elapsed = time.monotonic() - started
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)

    assert frozen and not stalled.success
    # Retried while the 20 s budget lasted, then failed with the cause, not "Exceeded
    # max_retries"; an attempt is bounded by the timeouts (2 x (1 + 2) s per request, once for
    # ClickHouse's s3() and once for boto3) and the budget caps the retries.
    (message,) = _step_failures(stalled)
    print(f"frozen S3: failed after {elapsed:.0f} s: {message}")
    assert elapsed < LIMIT, elapsed
    port = urlsplit(server.endpoint).port
    assert f"127.0.0.1:{port}" in message, message
    assert f"s3://landing/{settings.landing_prefix}/date={DAY.isoformat()}/" in message, message
    assert "USAGE_ETL_RETRY_BUDGET_SECONDS" in message, message
    assert "Exceeded max_retries" not in failure_message(stalled)

    rerun = run_job("daily_usage", DAY.isoformat())
    assert rerun.success, failure_message(rerun)
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == expected_daily(valid_rows(first))


class SilentServer:
    """Accepts TCP connections and never answers (a hung ClickHouse, a black-holed proxy)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_silent_clickhouse_server_fails_the_step_within_the_bound(
    landing, usage_env, short_bounds, silent_server, monkeypatch
):
    monkeypatch.setenv(
        "USAGE_ETL_CLICKHOUSE_DSN", f"http://etl:pw-silent@127.0.0.1:{silent_server.port}"
    )
    upload(landing, first_delivery())

    started = time.monotonic()
    result = run_job("daily_usage", DAY.isoformat())
    elapsed = time.monotonic() - started

    assert not result.success
    assert silent_server.accepted  # it did connect: the receive timeout ended the wait
    (message,) = _step_failures(result)
    print(f"silent ClickHouse: failed after {elapsed:.0f} s: {message}")
    assert elapsed < LIMIT, elapsed
    assert f"cannot connect to ClickHouse at http://etl:***@127.0.0.1:{silent_server.port}" in (
        message
    ), message
    assert "pw-silent" not in failure_message(result)
    # A timeout is transient: retried once within the 20 s budget (2 s per attempt + 5 s
    # backoff), then the step fails with the cause and why it stopped retrying.
    assert _retries(result) >= 1
    timeout = 30 if DEFAULT_BOUNDS else int(SHORT["USAGE_ETL_CLICKHOUSE_RECEIVE_TIMEOUT_SECONDS"])
    assert "gave up after" in message and f"read timeout={timeout})" in message, message
    assert "Exceeded max_retries" not in failure_message(result)


def test_a_wrong_s3_secret_fails_on_the_first_attempt_in_one_line(
    pipeline, landing, usage_env, monkeypatch
):
    upload(landing, first_delivery())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    result = run_job("daily_usage", DAY.isoformat())

    assert not result.success
    assert _retries(result) == 0
    (message,) = _step_failures(result)
    print(f"wrong secret: {message}")
    assert "\n" not in message
    assert "SignatureDoesNotMatch" in message and "AWS_SECRET_ACCESS_KEY" in message, message
    assert usage_env["AWS_ENDPOINT_URL_S3"] in message, message
    assert "not-the-secret" not in failure_message(result)


def test_a_missing_bucket_fails_on_the_first_attempt_in_one_line(pipeline, monkeypatch):
    monkeypatch.setenv("USAGE_ETL_LANDING_URL", "s3://no-such-bucket-21/rollups")

    result = run_job("daily_usage", DAY.isoformat())

    assert not result.success
    assert _retries(result) == 0
    (message,) = _step_failures(result)
    print(f"missing bucket: {message}")
    assert "NoSuchBucket" in message and "USAGE_ETL_LANDING_URL" in message, message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("USAGE_ETL_LANDING_URL", "https://bucket/rollups", "USAGE_ETL_LANDING_URL must look like"),
        ("USAGE_ETL_CLICKHOUSE_DSN", "mysql://u:pw@db/x", "USAGE_ETL_CLICKHOUSE_DSN must start"),
        ("USAGE_ETL_S3_READ_TIMEOUT_SECONDS", "soon", "USAGE_ETL_S3_READ_TIMEOUT_SECONDS:"),
    ],
)
def test_a_bad_setting_fails_the_run_on_the_first_attempt_in_one_line(
    pipeline, monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)

    result = run_job("daily_usage", DAY.isoformat())

    assert not result.success
    assert _retries(result) == 0
    (message,) = _step_failures(result)
    print(f"bad setting: {message}")
    assert "\n" not in message and expected in message, message
    assert "pydantic" not in message and "pw" not in message


@pytest.mark.skipif(
    not is_embedded(os.environ.get("USAGE_ETL_CLICKHOUSE_DSN", "chdb:")),
    reason="the single-writer lock exists for the embedded engine only",
)
def test_a_run_waiting_for_the_engine_lock_fails_once_naming_the_holder(
    pipeline, landing, monkeypatch
):
    upload(landing, first_delivery())
    monkeypatch.setenv("USAGE_ETL_CHDB_LOCK_TIMEOUT_SECONDS", "1")
    with engine_held_by_another_process(pipeline.dsn) as holder:
        busy = run_job("daily_usage", DAY.isoformat())  # retries enabled, as in production

    assert not busy.success
    assert _retries(busy) == 0  # the lock wait was the retry
    (message,) = _step_failures(busy)
    assert f"held by another process (pid {holder.pid}); waited 1s" in message, message
    assert "Exceeded max_retries" not in failure_message(busy)
