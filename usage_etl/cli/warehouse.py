"""`usage-etl migrate`: apply pending ClickHouse migrations (runs also do it automatically)."""

import typer
from rich.console import Console

from usage_etl.settings import load_settings
from usage_etl.warehouse.client import open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations, discover, render


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


def migrate(
    print_sql: bool = typer.Option(
        False, "--print-sql", help="Print the rendered DDL, apply nothing."
    ),
) -> None:
    """Apply pending migrations from sql/ to the configured ClickHouse database."""
    settings = load_settings()
    options = DdlOptions.from_settings(settings)
    console = Console()
    if print_sql:
        for migration in discover():
            for statement in render(migration, options):
                console.print(f"{statement};\n", markup=False, highlight=False)
        return
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        applied = apply_migrations(warehouse, options)
    target = settings.describe()["clickhouse_dsn"]
    console.print(f"applied {len(applied)} migration(s) {applied} to {target}/{settings.database}")
