"""Fixtures of the reliability suite (real SeaweedFS, real chDB, real subprocess runs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from reliability_harness import Pipeline
from rollup_files import Landing

from usage_etl.local_stack import SeaweedS3, start_seaweed
from usage_etl.warehouse.client import is_embedded


@pytest.fixture
def pipeline(usage_env, monkeypatch) -> Iterator[Pipeline]:
    """This test's pipeline on its own embedded engine (conftest's `clickhouse_dsn`: crash
    tests SIGKILL runs mid-write) or its own database of the server DSN under test. This
    process holds the engine only inside `pipeline.open()` and in-process runs, so subprocess
    runs can take it."""
    monkeypatch.delenv("USAGE_ETL_FAULT_POINT", raising=False)
    dsn = usage_env["USAGE_ETL_CLICKHOUSE_DSN"]
    pipe = Pipeline(dsn, usage_env["USAGE_ETL_DATABASE"])
    yield pipe
    if not is_embedded(dsn):
        with pipe.open() as warehouse:
            warehouse.command(f"DROP DATABASE IF EXISTS `{pipe.database}`")


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


@pytest.fixture
def own_s3(usage_env, tmp_path, monkeypatch) -> Iterator[list[SeaweedS3]]:
    """A SeaweedFS of this test's own (it gets killed); the list holds the live instance."""
    server = start_seaweed(tmp_path / "weed", secret_key=f"secret-{uuid.uuid4().hex}")
    server.ensure_bucket("landing")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    # boto3's default session caches the first credentials it resolved in this process.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    holder = [server]
    yield holder
    holder[0].stop()
