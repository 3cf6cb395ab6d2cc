"""`usage-etl demo`: the README's end-to-end run on real SeaweedFS and embedded ClickHouse."""

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    month: str = typer.Option("2026-10", help="Month to simulate and bill (YYYY-MM)."),
    nodes: int = typer.Option(8, help="Cache nodes in the simulated fleet."),
    accounts: int = typer.Option(40, help="Tenant accounts in the simulated fleet."),
    rows_per_day: int = typer.Option(20_000, help="Rollup rows per day over the fleet."),
    seed: int = typer.Option(7, help="Simulator seed (same seed, same objects)."),
) -> None:
    """Simulate a month, run daily_usage for every day and monthly_invoices, print a summary."""
    from usage_etl.demo import DemoOptions, run_demo  # Dagster loads only when a demo runs

    run_demo(DemoOptions(month, nodes, accounts, rows_per_day, seed))
