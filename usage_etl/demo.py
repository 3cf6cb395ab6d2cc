"""The end-to-end demo behind the README's `# main job` command.

Starts SeaweedFS on loopback, simulates a month of a realistic fleet (with faults: re-deliveries,
corrections, late and broken files, stray objects) plus the application's cache events, runs
`daily_usage` for every day and `monthly_invoices` for the month on the repo's Dagster instance
and embedded ClickHouse, prints a summary, and stops SeaweedFS. Re-running it is safe: the same
seed writes the same objects, which the ledger skips.
"""

from __future__ import annotations

import calendar
import os
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import dagster as dg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from usage_etl.instance import prepare_instance
from usage_etl.services import seaweed
from usage_etl.settings import REPO_ROOT, Settings, dagster_home
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator, date_range
from usage_etl.warehouse.client import open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_S3_PORT = 18333  # fixed so `scripts/dev.sh` finds the same endpoint for the UI


@dataclass(frozen=True)
class DemoOptions:
    month: str = "2026-10"
    nodes: int = 8
    accounts: int = 40
    rows_per_day: int = 20_000
    seed: int = 7


def month_days(month: str) -> list[date]:
    year, number = (int(p) for p in month.split("-"))
    last = calendar.monthrange(year, number)[1]
    return date_range(date(year, number, 1), date(year, number, last))


def run_demo(options: DemoOptions, console: Console | None = None) -> None:
    console = console or Console()
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(home))
    prepare_instance(home)  # before any run: two first runs must not both create its tables
    with seaweed(DEMO_DIR / "seaweedfs", s3_port=DEMO_S3_PORT) as s3:
        os.environ.update(s3.env())
        settings = Settings()
        s3.ensure_bucket(settings.landing_bucket)
        console.print(
            f"[bold]SeaweedFS[/] S3 at {s3.endpoint}; landing {settings.landing_url}; "
            f"warehouse {settings.describe()['clickhouse_dsn']} (database {settings.database})"
        )
        days = month_days(options.month)
        _simulate(options, days, s3, settings, console)
        instance = dg.DagsterInstance.get()
        _run_days(days, instance, console)
        _run_invoices(options.month, instance, console)
        _summary(settings, days, options.month, console)
    console.print(
        "\n[bold]Open the Dagster UI[/] on this data: [cyan]bash scripts/dev.sh[/] "
        "(starts SeaweedFS and `dagster dev`, then browse http://127.0.0.1:3000)."
    )


def _simulate(options: DemoOptions, days: list[date], s3, settings: Settings, console) -> None:
    sim = Simulator(
        FleetSpec(
            nodes=options.nodes, accounts=options.accounts,
            rows_per_day=options.rows_per_day, seed=options.seed,
        ),
        FaultSpec.default(),
    )  # fmt: skip
    client = s3.client()
    files = events = 0
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        apply_migrations(warehouse, DdlOptions.from_settings(settings))
        already = warehouse.query_one(
            f"SELECT count() FROM {warehouse.table(settings.cache_events_table)} "
            "WHERE toDate(occurred_at) BETWEEN {first:Date} AND {last:Date}",
            {"first": days[0], "last": days[-1]},
        )
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("simulating the fleet", total=len(days))
            for day in days:
                sim_day = sim.generate_day(day)
                files += sim.upload(
                    sim_day.files, client, settings.landing_bucket, settings.landing_prefix,
                    include_late=True,
                )  # fmt: skip
                if not already:  # cache events are not idempotent inserts: write them once
                    events += sim.write_cache_events(
                        warehouse, sim_day, settings.cache_events_table
                    )
                progress.advance(task)
    console.print(f"simulated {len(days)} days: {files} objects uploaded, {events} cache events")


def _run_days(days: list[date], instance: dg.DagsterInstance, console: Console) -> None:
    from usage_etl.definitions import defs

    job = defs().resolve_job_def("daily_usage")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("daily_usage", total=len(days))
        for day in days:
            result = job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, raise_on_error=False,
                tags={"usage_etl/trigger": "demo"},
            )  # fmt: skip
            if not result.success:
                raise SystemExit(f"daily_usage failed for {day}: see the run in the Dagster UI")
            progress.advance(task)
    console.print(f"daily_usage: {len(days)} partitions materialized")


def _run_invoices(month: str, instance: dg.DagsterInstance, console: Console) -> None:
    from usage_etl.definitions import defs

    job = defs().resolve_job_def("monthly_invoices")
    result = job.execute_in_process(
        partition_key=f"{month}-01", instance=instance, raise_on_error=False,
        tags={"usage_etl/trigger": "demo"},
    )  # fmt: skip
    if not result.success:
        raise SystemExit(f"monthly_invoices failed for {month}: see the run in the Dagster UI")
    console.print(f"monthly_invoices: {month} priced")


def _summary(settings: Settings, days: list[date], month: str, console: Console) -> None:
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        params = {"first": days[0], "last": days[-1], "period": date.fromisoformat(f"{month}-01")}
        loads = warehouse.query_dicts(
            f"""
            SELECT sum(r) AS rows, sum(d) AS duplicates, sum(c) AS conflicts,
                   sum(ol) AS objects_loaded, sum(oq) AS objects_quarantined,
                   sum(oi) AS objects_ignored
            FROM (
                SELECT day,
                       argMax(rows_loaded, published_at) AS r,
                       argMax(duplicates, published_at) AS d,
                       argMax(conflicts, published_at) AS c,
                       argMax(objects_loaded, published_at) AS ol,
                       argMax(objects_quarantined, published_at) AS oq,
                       argMax(objects_ignored, published_at) AS oi
                FROM {warehouse.table("usage_day_publications")}
                WHERE day BETWEEN {{first:Date}} AND {{last:Date}}
                GROUP BY day
            )
            """,
            params,
        )[0]
        quarantined = warehouse.query_one(
            f"SELECT count() FROM {warehouse.table('quarantined_rows')} "
            "WHERE day BETWEEN {first:Date} AND {last:Date}",
            params,
        )
        invoices = warehouse.query_dicts(
            f"SELECT account_id, status, currency, subtotal FROM {warehouse.table('invoices')} "
            "WHERE period_start = {period:Date} ORDER BY subtotal DESC, account_id",
            params,
        )
    console.print(
        f"\n[bold]Usage {month}[/]: {loads['rows']:,} rollup rows staged from "
        f"{loads['objects_loaded']:,} objects; {loads['duplicates']:,} duplicates removed; "
        f"{loads['conflicts']:,} conflicts; {loads['objects_quarantined']:,} objects and "
        f"{quarantined:,} quarantine records; {loads['objects_ignored']:,} stray objects ignored."
    )
    table = Table(title=f"Invoices {month}")
    for column in ("account", "status", "subtotal"):
        table.add_column(column, justify="right" if column == "subtotal" else "left")
    for row in invoices[:15]:
        table.add_row(row["account_id"], row["status"], f"{row['subtotal']} {row['currency']}")
    console.print(table)
    total = sum((r["subtotal"] for r in invoices), Decimal(0))
    console.print(f"{len(invoices)} invoices, total {total} (top 15 shown)")
