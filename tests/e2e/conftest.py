"""One Dagster deployment (webserver + daemon on PostgreSQL) shared by the end-to-end tests.

Its pipeline settings are fixed for its lifetime: its own landing prefix, ClickHouse database
and embedded engine path. The tests use distinct days. The pytest process opens that engine
only between runs, to check results (chDB admits one process per engine path)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from e2e_stack import DagsterStack, start_stack

from usage_etl.local_stack import _create_database

LANDING_BUCKET = "landing"


@pytest.fixture(scope="package")  # stop the daemon once tests/e2e is done
def dagster_stack(tmp_path_factory, s3_server, postgres_server) -> Iterator[DagsterStack]:
    run_id = uuid.uuid4().hex[:8]
    workdir = tmp_path_factory.mktemp("e2e")
    # A database of its own: other tests' instances share the session's PostgreSQL server.
    postgres = dataclasses.replace(postgres_server, database=f"dagster_e2e_{run_id}")
    _create_database(postgres)
    env = {
        **s3_server.env(),
        **postgres.env(),
        "USAGE_ETL_CLICKHOUSE_DSN": f"chdb://{workdir / 'engine'}",
        "USAGE_ETL_DATABASE": f"e2e_{run_id}",
        "USAGE_ETL_LANDING_URL": f"s3://{LANDING_BUCKET}/e2e-{run_id}/rollups",
    }
    stack = start_stack(workdir, env)
    try:
        yield stack
    finally:
        stack.stop()
