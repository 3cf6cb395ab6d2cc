"""`usage-etl doctor` and the CLI's handling of bad settings, through the real command line
against real SeaweedFS and a real embedded engine (a process of its own per command)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from engine_holder import engine_held_by_another_process

from usage_etl.instance import instance_problems, prepare_instance

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("usage-etl"))


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """check name -> its line (the first line of each name)."""
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line[:1] in "✓⚠✗" and ":" in line:
            found.setdefault(line[2:].split(":")[0], line)
    return found


@pytest.fixture
def deployment(usage_env, tmp_path, monkeypatch, s3_server):
    """This test's own engine path, a landing object to read, a prepared instance."""
    monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", f"chdb://{tmp_path / 'engine'}")
    bucket, _, prefix = usage_env["USAGE_ETL_LANDING_URL"].removeprefix("s3://").partition("/")
    s3_server.client().put_object(
        Bucket=bucket, Key=f"{prefix}/date=2026-10-05/hour=00/node=n1/x.parquet", Body=b"x"
    )
    prepare_instance()
    return usage_env


def test_doctor_passes_on_a_healthy_deployment(deployment, s3_server):
    result = _cli("doctor")

    lines = _lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("settings", "price book", "S3 list", "S3 get", "S3 put", "ClickHouse", "instance"):
        assert lines[name].startswith("✓"), lines
    # A database no run has touched yet: its migrations are pending, which is not a failure.
    assert lines["migrations"][0] in "✓⚠", lines
    # The marker object written to check `put` is gone again.
    bucket = deployment["USAGE_ETL_LANDING_URL"].removeprefix("s3://").partition("/")[0]
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and not [k for k in keys if ".usage-etl-doctor-" in k]


def test_doctor_names_a_wrong_secret_and_exits_1(deployment, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-21")

    result = _cli("doctor")

    assert result.returncode == 1
    line = _lines(result)["S3 list"]
    assert line.startswith("✗") and "SignatureDoesNotMatch" in line, line
    assert "fix: the S3 secret key is wrong: check AWS_SECRET_ACCESS_KEY" in line
    assert "wrong-secret-21" not in result.stdout + result.stderr


def test_doctor_names_a_missing_bucket_and_exits_1(deployment, monkeypatch):
    monkeypatch.setenv("USAGE_ETL_LANDING_URL", "s3://no-such-bucket-21/rollups")

    result = _cli("doctor")

    assert result.returncode == 1
    line = _lines(result)["S3 list"]
    assert line.startswith("✗") and "NoSuchBucket" in line and "USAGE_ETL_LANDING_URL" in line


def test_doctor_reports_an_engine_in_use_as_busy_without_waiting(deployment, tmp_path):
    with engine_held_by_another_process(os.environ["USAGE_ETL_CLICKHOUSE_DSN"]) as holder:
        result = _cli("doctor", "--lock-wait", "1")

    line = _lines(result)["ClickHouse"]
    assert line.startswith("⚠") and f"busy: in use by pid {holder.pid}" in line, line
    assert result.returncode == 0, result.stdout


def test_doctor_detects_two_alembic_heads_and_repairs_them(deployment):
    home = Path(deployment["DAGSTER_HOME"])
    runs_db = home / "history" / "runs.db"
    with sqlite3.connect(runs_db) as connection:  # what two racing first runs leave behind
        connection.execute("INSERT INTO alembic_version VALUES ('16e3655b4d9b')")
    assert [p.problem.split(" (")[0] for p in instance_problems(home)] == ["2 Alembic heads"]

    broken = _cli("doctor")
    repaired = _cli("doctor", "--repair-instance")

    assert broken.returncode == 1
    line = _lines(broken)["instance"]
    assert line.startswith("✗") and "2 Alembic heads" in line and "--repair-instance" in line
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert _lines(repaired)["instance"].startswith("✓")
    assert instance_problems(home) == []


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("USAGE_ETL_CLICKHOUSE_DSN", "mysql://u:hunter2@db/x", "USAGE_ETL_CLICKHOUSE_DSN must"),
        ("USAGE_ETL_LANDING_URL", "landing/rollups", "USAGE_ETL_LANDING_URL must look like"),
        ("USAGE_ETL_DATABASE", "usage;drop", "USAGE_ETL_DATABASE: must be a plain identifier"),
        ("USAGE_ETL_AS_OF", "yesterday", "USAGE_ETL_AS_OF must be an ISO 8601 time"),
        ("USAGE_ETL_S3_MAX_ATTEMPTS", "0", "USAGE_ETL_S3_MAX_ATTEMPTS:"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(usage_env, monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)

    result = _cli("migrate")

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr
    for leak in ("Traceback", "pydantic", "hunter2"):
        assert leak not in result.stderr


def test_doctor_lists_every_bad_setting_on_its_own_line(usage_env, monkeypatch):
    monkeypatch.setenv("USAGE_ETL_LANDING_URL", "landing/rollups")
    monkeypatch.setenv("USAGE_ETL_S3_READ_TIMEOUT_SECONDS", "-1")

    result = _cli("doctor")

    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert any("USAGE_ETL_LANDING_URL" in line for line in failed), result.stdout
    assert any("USAGE_ETL_S3_READ_TIMEOUT_SECONDS" in line for line in failed), result.stdout
