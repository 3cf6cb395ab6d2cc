"""Versioned ClickHouse DDL: `sql/NNN_description.sql`, applied in order, recorded, idempotent.

Files are templates (`string.Template`): `${database}`, `${cache_events_table}`,
`${on_cluster}` (empty, or `ON CLUSTER name`) and `${MergeTree}` (`MergeTree`, or
`ReplicatedMergeTree` on a replicated cluster, relying on the server's default replica path).
Only validated identifiers are substituted; no data ever enters DDL.

An applied migration is recorded with the checksum of its text; editing an applied file is an
error (write a new migration instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from usage_etl.settings import SQL_DIR, Settings
from usage_etl.warehouse.client import Warehouse, WarehouseError

MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class DdlOptions:
    database: str
    cache_events_table: str = "cache_events"
    cluster: str | None = None
    replicated: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> DdlOptions:
        return cls(
            database=settings.database,
            cache_events_table=settings.cache_events_table,
            cluster=settings.clickhouse_cluster,
            replicated=settings.clickhouse_replicated,
        )

    def variables(self) -> dict[str, str]:
        return {
            "database": f"`{self.database}`",
            "cache_events_table": f"`{self.cache_events_table}`",
            "on_cluster": f"ON CLUSTER `{self.cluster}`" if self.cluster else "",
            "MergeTree": "ReplicatedMergeTree" if self.replicated else "MergeTree",
        }


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match:
            migrations.append(Migration(match.group(1), match.group(2), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise WarehouseError(f"two migrations share a version number in {sql_dir}: {versions}")
    return migrations


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements: `;` at the end of a line ends one. Drops comments."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";").strip())
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if s]


def render(migration: Migration, options: DdlOptions) -> list[str]:
    return [Template(s).substitute(options.variables()) for s in split_statements(migration.text)]


def _ensure_bookkeeping(warehouse: Warehouse, options: DdlOptions) -> None:
    on_cluster = options.variables()["on_cluster"]
    engine = options.variables()["MergeTree"]
    warehouse.command(f"CREATE DATABASE IF NOT EXISTS `{options.database}` {on_cluster}")
    warehouse.command(
        f"CREATE TABLE IF NOT EXISTS `{options.database}`.`schema_migrations` {on_cluster} "
        "(version String, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        f"ENGINE = {engine} ORDER BY version"
    )


def applied_versions(warehouse: Warehouse, database: str) -> dict[str, str]:
    rows = warehouse.query_rows(
        f"SELECT version, any(checksum) FROM `{database}`.`schema_migrations` GROUP BY version"
    )
    return dict(rows)


def apply_migrations(warehouse: Warehouse, options: DdlOptions) -> list[str]:
    """Apply every pending migration in order; return the versions applied now."""
    _ensure_bookkeeping(warehouse, options)
    applied = applied_versions(warehouse, options.database)
    newly_applied = []
    for migration in discover():
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise WarehouseError(
                    f"migration {migration.path.name} was changed after it was applied; "
                    "write a new migration file instead of editing an applied one"
                )
            continue
        for statement in render(migration, options):
            warehouse.command(statement)
        warehouse.insert_json_rows(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
            ["version", "name", "checksum", "applied_at"],
        )
        newly_applied.append(migration.version)
    return newly_applied
