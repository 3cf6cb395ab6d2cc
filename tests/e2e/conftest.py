"""One Dagster deployment (webserver + daemon on PostgreSQL) shared by the end-to-end tests.

Its pipeline settings are fixed for its lifetime: its own landing prefix, ClickHouse database
and embedded engine path. The tests use distinct days. The pytest process opens that engine
only between runs, to check results (chDB admits one process per engine path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from e2e_stack import DagsterStack, start_stack

from usage_etl.settings import Settings
from usage_etl.warehouse.client import Warehouse

LANDING_BUCKET = "landing"


@pytest.fixture(scope="session")
def dagster_stack(tmp_path_factory, s3_server, postgres_server) -> Iterator[DagsterStack]:
    run_id = uuid.uuid4().hex[:8]
    workdir = tmp_path_factory.mktemp("e2e")
    env = {
        **s3_server.env(),
        **postgres_server.env(),
        "USAGE_ETL_CLICKHOUSE_DSN": f"chdb://{workdir / 'engine'}",
        "USAGE_ETL_DATABASE": f"e2e_{run_id}",
        "USAGE_ETL_LANDING_URL": f"s3://{LANDING_BUCKET}/e2e-{run_id}/rollups",
    }
    stack = start_stack(workdir, env)
    try:
        yield stack
    finally:
        stack.stop()


def stack_settings(stack: DagsterStack) -> Settings:
    return Settings(
        clickhouse_dsn=stack.env["USAGE_ETL_CLICKHOUSE_DSN"],
        database=stack.env["USAGE_ETL_DATABASE"],
        landing_url=stack.env["USAGE_ETL_LANDING_URL"],
    )


@contextmanager
def stack_warehouse(stack: DagsterStack) -> Iterator[Warehouse]:
    """The deployment's warehouse, opened only while no run needs it."""
    settings = stack_settings(stack)
    warehouse = Warehouse.open(settings.clickhouse_dsn, settings.database, 120)
    try:
        yield warehouse
    finally:
        warehouse.close()
