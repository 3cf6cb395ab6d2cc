"""Secrets stay secret: S3 keys and the ClickHouse password never appear in logs, stdout or
stderr, Dagster events (materialization metadata included), run records, exceptions, or any
file the Dagster instance writes.

Runs use known secret values: a SeaweedFS of the test's own with a random secret key, a
ClickHouse "server" that rejects the password like a real one (code 516), a server that refuses
connections, and a wrong S3 secret. Everything captured is scanned for every secret, in its
plain, percent-encoded and decoded forms.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import boto3
import dagster as dg
import pytest
from dagster._serdes import serialize_value
from reliability_harness import (
    DAY,
    NO_RETRIES,
    ONE_S3_ATTEMPT,
    failure_message,
    first_delivery,
    run_job,
    upload,
)
from rollup_files import Landing

from usage_etl.local_stack import free_port

PASSWORD = f"pw/{uuid.uuid4().hex[:8]}@#%"  # characters that must be percent-encoded
ENCODED = quote(PASSWORD, safe="")


class _RejectingClickHouse(BaseHTTPRequestHandler):
    """Answers every request the way ClickHouse answers a wrong password."""

    def _reject(self) -> None:
        body = (
            b"Code: 516. DB::Exception: etl: Authentication failed: password is incorrect, or "
            b"there is no user with such name. (AUTHENTICATION_FAILED)"
        )
        self.send_response(516)
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reject

    def log_message(self, *args) -> None:  # keep the test's output clean
        pass


@pytest.fixture
def rejecting_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RejectingClickHouse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


def _instance_record(instance: dg.DagsterInstance, result) -> str:
    """Everything Dagster stored about a run: events (metadata, errors, logs) and the run."""
    entries = instance.all_logs(result.run_id)
    run = instance.get_run_by_id(result.run_id)
    return "\n".join([serialize_value(run), *(serialize_value(e) for e in entries)])


def test_in_process_runs_never_show_a_secret(
    own_s3, pipeline, settings, rejecting_server, caplog, capfd, monkeypatch
):
    caplog.set_level(logging.DEBUG)  # boto, urllib3, clickhouse-connect, dagster: everything
    server = own_s3[0]
    secrets = [server.secret_key, PASSWORD, ENCODED]
    upload(Landing(server, settings), first_delivery())
    records = []
    with dg.DagsterInstance.ephemeral() as instance:
        # A good day and a month with exports to S3: the secret key signs every request.
        monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-10-20T00:00:00Z")
        good = [run_job("daily_usage", DAY.isoformat(), instance=instance),
                run_job("monthly_invoices", "2026-10-01", instance=instance)]  # fmt: skip
        # A wrong S3 secret: the store refuses the signature.
        wrong = f"wrong-{uuid.uuid4().hex}"
        secrets.append(wrong)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches credentials
        refused_s3 = run_job(
            "daily_usage", DAY.isoformat(), retries=False, config=ONE_S3_ATTEMPT, instance=instance
        )
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        # A ClickHouse server that rejects the password, and one that is not there.
        failed = [refused_s3]
        for port in (rejecting_server, free_port()):
            monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", f"http://etl:{ENCODED}@127.0.0.1:{port}")
            failed.append(run_job("daily_usage", DAY.isoformat(), retries=False, instance=instance))
        records = [_instance_record(instance, r) for r in good + failed]

    assert [r.success for r in good + failed] == [True, True, False, False, False]
    assert "SignatureDoesNotMatch" in failure_message(refused_s3)
    assert "AUTHENTICATION_FAILED" in failure_message(failed[1])
    assert "http://etl:***@127.0.0.1" in failure_message(failed[2])
    captured = capfd.readouterr()
    for name, text in [
        ("logs", caplog.text), ("stdout", captured.out), ("stderr", captured.err),
        *((f"run {i}", record) for i, record in enumerate(records)),
        *((f"failure {i}", failure_message(r)) for i, r in enumerate(failed)),
    ]:  # fmt: skip
        assert _leaks(text, secrets) == [], f"a secret leaked into {name}"
    assert len(caplog.records) > 100  # the scan really saw the debug logs


def test_the_command_line_run_never_shows_a_secret(own_s3, pipeline, settings, rejecting_server):
    """`dagster job execute` as an operator runs it, secrets in its environment: its output
    and every file it leaves in DAGSTER_HOME (sqlite event log, run storage, compute logs)."""
    server = own_s3[0]
    upload(Landing(server, settings), first_delivery())
    dsn = f"http://etl:{ENCODED}@127.0.0.1:{rejecting_server}"

    result = pipeline.cli(
        "daily_usage", DAY.isoformat(), env={"USAGE_ETL_CLICKHOUSE_DSN": dsn}, config=NO_RETRIES
    )

    assert result.returncode != 0
    assert "AUTHENTICATION_FAILED" in result.stdout + result.stderr
    secrets = [server.secret_key, PASSWORD, ENCODED]
    assert _leaks(result.stdout + result.stderr, secrets) == []
    home = Path(os.environ["DAGSTER_HOME"])
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        content = path.read_bytes().decode("utf-8", "replace")
        assert _leaks(content, secrets) == [], f"a secret leaked into {path}"
