"""Shared fixtures: real SeaweedFS S3, real ClickHouse (chDB, or a server), real PostgreSQL.

Isolation: one SeaweedFS per test session; each test gets its own embedded engine (or, on a
server, its own database) and its own landing prefix, through the same environment variables an
operator sets (contract §6), so the code under test reads its configuration the normal way.

Set USAGE_ETL_CLICKHOUSE_DSN to an http(s):// server DSN to run the suite against a server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from usage_etl.local_stack import Postgres, SeaweedS3, start_postgres, start_seaweed
from usage_etl.settings import Settings
from usage_etl.warehouse.client import Warehouse, is_embedded
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

LANDING_BUCKET = "landing"
SERVER_DSN = os.environ.get("USAGE_ETL_CLICKHOUSE_DSN", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep `xdist_group` tests on one worker under pytest 9.

    pytest-xdist 3.8 (`--dist loadgroup`, scripts/test.sh) groups tests by suffixing each
    marked item's node id with `@group`, which it does by setting `item._nodeid`; pytest 9
    reads node ids from `item._id`, so the suffix never showed and every group was silently
    split over both workers (the e2e stack and the money-view month were each built twice).
    This sets the suffix where pytest 9 reads it. A no-op without loadgroup, or once xdist
    itself gets it through (the id then already ends with the group)."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        marks = item.iter_markers("xdist_group")
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        suffix = f"@{'_'.join(sorted(names))}"
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[SeaweedS3]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    server.ensure_bucket(LANDING_BUCKET)
    try:
        yield server
    finally:
        server.stop()


def clickhouse_dsn_in(folder: Path) -> str:
    """The server's DSN when the suite runs against one, else a new embedded engine in `folder`.

    Not one engine for the whole session: an engine opens its every database's tables, so an
    engine holding the databases of the tests before took 2-2.5 s to open after ~180 of them
    (0.06 s empty), paid by every test and every run a test starts."""
    if SERVER_DSN and not is_embedded(SERVER_DSN):
        return SERVER_DSN
    return f"chdb://{folder / 'engine'}"


@pytest.fixture
def clickhouse_dsn(tmp_path) -> str:
    return clickhouse_dsn_in(tmp_path / "chdb")


@pytest.fixture(scope="module")
def module_clickhouse_dsn(tmp_path_factory) -> str:
    """For a module's shared fixture (one engine for the module's tests)."""
    return clickhouse_dsn_in(tmp_path_factory.mktemp("chdb"))


@pytest.fixture
def usage_env(monkeypatch, s3_server, clickhouse_dsn, tmp_path) -> dict[str, str]:
    """Point every setting at this test's own database and landing prefix."""
    test_id = uuid.uuid4().hex[:10]
    env = {
        **s3_server.env(),
        "USAGE_ETL_CLICKHOUSE_DSN": clickhouse_dsn,
        "USAGE_ETL_DATABASE": f"t_{test_id}",
        "USAGE_ETL_LANDING_URL": f"s3://{LANDING_BUCKET}/t-{test_id}/rollups",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    Path(env["DAGSTER_HOME"]).mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("USAGE_ETL_AS_OF", raising=False)
    return env


@pytest.fixture
def settings(usage_env) -> Settings:
    return Settings()


@pytest.fixture
def warehouse(settings) -> Iterator[Warehouse]:
    """A migrated ClickHouse database of this test's own; closed (lock released) afterwards."""
    wh = Warehouse.open(settings.clickhouse_dsn, settings.database, lock_timeout_seconds=60)
    try:
        apply_migrations(wh, DdlOptions.from_settings(settings))
        yield wh
    finally:
        if not wh.embedded:
            wh.command(f"DROP DATABASE IF EXISTS `{settings.database}`")
        wh.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[Postgres]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()
