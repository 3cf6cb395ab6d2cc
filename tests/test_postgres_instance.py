"""The production Dagster instance kind: a partitioned job on dagster-postgres storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
from dagster_postgres.run_storage import PostgresRunStorage

REPO = Path(__file__).resolve().parents[1]


def test_partitioned_job_runs_on_a_postgres_instance(postgres_server, usage_env, tmp_path):
    """The production instance kind: dagster-postgres storage against a real server."""
    home = Path(usage_env["DAGSTER_HOME"])
    home.joinpath("dagster.yaml").write_text(
        (REPO / "dagster_home" / "dagster.postgres.yaml").read_text()
    )
    env = {**os.environ, **postgres_server.env()}
    marker = uuid.uuid4().hex  # the session's PostgreSQL is shared with other tests
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "job",
            "execute",
            "-m",
            "usage_etl.definitions",
            "-j",
            "daily_usage",
            "--tags",
            json.dumps({"dagster/partition": "2026-10-05", "test/run": marker}),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    os.environ.update(postgres_server.env())
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # dagster-postgres' run storage, its connections kept open (pg_instance_storage.py)
            assert type(instance.run_storage).__name__ == "KeptOpenPostgresRunStorage"
            assert isinstance(instance.run_storage, PostgresRunStorage)
            runs = instance.get_runs(
                filters=dg.RunsFilter(job_name="daily_usage", tags={"test/run": marker})
            )
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    finally:
        for key in postgres_server.env():
            os.environ.pop(key, None)
