"""Dagster resources, all of them: the warehouse, the landing bucket, the price book, the clock
and the node registry, bound to every asset, check, sensor and schedule of the code location.

Each resource reads the contract's settings (§6) from the environment *when a run uses it*, so
loading definitions never touches ClickHouse or S3, and explicit fields (tests, the launchpad)
override the environment. The domain objects they hand out (`Warehouse`, a boto3 client,
`NodeRegistry`) know nothing of Dagster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from usage_etl.defs.usage.errors import retry_only_transient
from usage_etl.s3 import s3_client
from usage_etl.settings import Settings, SettingsError, parse_as_of
from usage_etl.usage.native import S3Access, s3_access_from_client
from usage_etl.usage.registry import NodeRegistry
from usage_etl.warehouse.build_tables import drop_stale_build_tables
from usage_etl.warehouse.client import ConnectOptions, Warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations


def _settings(**overrides: Any) -> Settings:
    """The settings a run uses; a bad one fails the step at once, in one line, not retried."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise dg.Failure(f"bad setting: {exc}", allow_retries=False) from None


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse through clickhouse-connect: embedded chDB by default, or a server DSN.

    The first use in a run opens the client (taking the embedded engine's lock), applies
    pending migrations and drops build tables that runs killed a day or more ago left behind;
    the run's end closes it and releases the lock.
    """

    dsn: str | None = None
    database: str | None = None
    cache_events_table: str | None = None
    lock_timeout_seconds: float | None = None

    _warehouse: Warehouse | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        return _settings(
            clickhouse_dsn=self.dsn,
            database=self.database,
            cache_events_table=self.cache_events_table,
            chdb_lock_timeout_seconds=self.lock_timeout_seconds,
        )

    def get_warehouse(self) -> Warehouse:
        if self._warehouse is None:
            settings = self.settings()
            with retry_only_transient("opening the warehouse"):
                warehouse = Warehouse.open(
                    settings.clickhouse_dsn, settings.database,
                    settings.chdb_lock_timeout_seconds, ConnectOptions.from_settings(settings),
                )  # fmt: skip
            try:
                with retry_only_transient("preparing the warehouse"):
                    apply_migrations(warehouse, DdlOptions.from_settings(settings))
                    for name in drop_stale_build_tables(warehouse):
                        dg.get_dagster_logger().warning(
                            f"dropped {name}: a build table left by a run killed mid-publish"
                        )
            except BaseException:
                warehouse.close()
                raise
            self._warehouse = warehouse
        return self._warehouse

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None


class LandingResource(dg.ConfigurableResource):
    """The S3-compatible landing area (boto3 honours AWS_ENDPOINT_URL_S3 and the AWS_* keys)."""

    landing_url: str | None = None
    # Attempts per S3 request, the first included; None: USAGE_ETL_S3_MAX_ATTEMPTS.
    max_attempts: int | None = None

    def settings(self) -> Settings:
        return _settings(landing_url=self.landing_url)

    @property
    def bucket(self) -> str:
        return self.settings().landing_bucket

    @property
    def prefix(self) -> str:
        return self.settings().landing_prefix

    def get_client(self):
        return s3_client(self.max_attempts, self.settings())

    def clickhouse_access(self, client) -> S3Access | None:
        """Endpoint and credentials for ClickHouse's own s3() reads, when enabled."""
        if not self.settings().native_s3_reads:
            return None
        return s3_access_from_client(client)


class PriceBookResource(dg.ConfigurableResource):
    """Path of the price book YAML (contract §3)."""

    path: str | None = None

    def resolved_path(self) -> Path:
        return Path(self.path) if self.path else _settings().price_book


class ClockResource(dg.ConfigurableResource):
    """The run's notion of "now": USAGE_ETL_AS_OF when set, else the wall clock (UTC)."""

    as_of: str | None = None

    def now(self) -> datetime:
        configured = parse_as_of(self.as_of) or parse_as_of(_settings().as_of)
        return configured or datetime.now(UTC)


class NodeRegistryResource(dg.ConfigurableResource):
    """Path of the node registry YAML; unset means USAGE_ETL_NODE_REGISTRY or no registry."""

    path: str | None = None

    def load(self) -> NodeRegistry:
        path = Path(self.path) if self.path else Settings().node_registry
        return NodeRegistry.from_file(path) if path else NodeRegistry()


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "node_registry": NodeRegistryResource(),
        "clickhouse": ClickHouseResource(),
        "landing": LandingResource(),
        "price_book": PriceBookResource(),
        "clock": ClockResource(),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
