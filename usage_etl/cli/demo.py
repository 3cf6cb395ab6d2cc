"""`usage-etl demo`: the README's end-to-end run on real SeaweedFS and embedded ClickHouse."""

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    month: str = typer.Option("2026-10", help="Month to simulate and bill (YYYY-MM)."),
    days: int | None = typer.Option(
        None, "--days", min=1, max=31, help="Only N days of the month (a quicker demo)."
    ),
    start_day: int = typer.Option(
        1, "--start-day", min=1, max=31, help="Day of the month the demo starts on."
    ),
    nodes: int = typer.Option(8, min=1, help="Cache nodes in the simulated fleet."),
    accounts: int = typer.Option(40, min=1, help="Tenant accounts in the simulated fleet."),
    rows_per_day: int = typer.Option(20_000, min=1, help="Rollup rows per day over the fleet."),
    seed: int = typer.Option(7, help="Simulator seed (same seed, same objects)."),
    s3_port: int = typer.Option(
        18333, "--s3-port", min=1, max=65535, help="Port of the demo's SeaweedFS S3 gateway."
    ),
    export_dir: Annotated[
        Path | None,
        typer.Option(
            "--export-dir", help="Folder for the invoice export (default dagster_home/exports)."
        ),
    ] = None,
) -> None:
    """Simulate a month, run daily_usage for every day and monthly_invoices, print a summary.

    Dagster's event log goes to dagster_home/demo.log; the settings used go to
    dagster_home/demo.env (`source` it to run the README's commands on the demo's data).
    """
    from usage_etl.periods import Period

    try:
        period = Period.parse(month)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--month") from None
    month = period.label
    if start_day > len(period.days):
        raise typer.BadParameter(f"{month} has {len(period.days)} days", param_hint="--start-day")
    from usage_etl.demo import DemoOptions, run_demo  # Dagster loads only when a demo runs

    run_demo(
        DemoOptions(
            month=month,
            nodes=nodes,
            accounts=accounts,
            rows_per_day=rows_per_day,
            seed=seed,
            days=days,
            start_day=start_day,
            s3_port=s3_port,
            export_dir=export_dir,
        )
    )
