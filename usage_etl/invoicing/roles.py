"""ClickHouse roles for server deployments (sql/roles/*.sql): not migrations, because the
embedded engine has no access control and a cluster's roles are managed once per server."""

from __future__ import annotations

from pathlib import Path

from usage_etl.settings import SQL_DIR
from usage_etl.warehouse.migrations import DdlOptions, Migration, render

ROLES_DIR = SQL_DIR / "roles"


def role_files(roles_dir: Path = ROLES_DIR) -> list[Path]:
    return sorted(roles_dir.glob("*.sql"))


def role_statements(options: DdlOptions, roles_dir: Path = ROLES_DIR) -> list[str]:
    """The rendered statements of every role file, for `options.database`."""
    statements = []
    for path in role_files(roles_dir):
        statements.extend(render(Migration("role", path.stem, path), options))
    return statements
