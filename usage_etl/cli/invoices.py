"""`usage-etl invoices`: print a period's invoices and lines; `usage-etl roles`: the finance
read-only and pipeline roles for ClickHouse server deployments."""

from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from usage_etl.invoicing.export import INVOICE_COLUMNS, cell
from usage_etl.invoicing.lines import LINE_COLUMNS
from usage_etl.invoicing.periods import Period
from usage_etl.invoicing.roles import role_statements
from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.settings import load_settings
from usage_etl.warehouse.client import WarehouseError, open_warehouse
from usage_etl.warehouse.migrations import DdlOptions

TABLE_LINE_COLUMNS = (
    "account_id", "kind", "corrected_period_start", "meter", "tier", "quantity", "unit",
    "unit_price", "amount", "status",
)  # fmt: skip


WIDE = 220


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("invoices")(invoices)
    app.command("roles")(roles)


def _period(value: str) -> Period:
    try:
        return Period.parse(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def invoices(
    period: Annotated[str, typer.Option("--period", help="Billing period: 2026-10.")],
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="table, csv (the lines) or json.")
    ] = Format.table,
) -> None:
    """Print the invoices and invoice lines of one billing period."""
    billing = _period(period)
    settings = load_settings()
    # Read-only on purpose (no migrations): finance users hold SELECT on these tables only.
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        try:
            found = read_invoices(warehouse, billing, account)
            lines = read_lines(warehouse, billing, account)
        except WarehouseError as error:
            Console(stderr=True).print(f"cannot read invoices: {error}", markup=False)
            raise typer.Exit(1) from None
    if fmt is Format.json:
        payload = {
            "period": billing.label,
            "invoices": [{c: cell(i[c]) for c in INVOICE_COLUMNS} for i in found],
            "lines": [{c: cell(line[c]) for c in LINE_COLUMNS} for line in lines],
        }
        print(json.dumps(payload, indent=2))
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(LINE_COLUMNS)
        writer.writerows([cell(line[c]) for c in LINE_COLUMNS] for line in lines)
    else:
        # Piped output (a file, a pager, a report) gets full-width rows instead of "…" cells.
        console = Console() if sys.stdout.isatty() else Console(width=WIDE)
        print_tables(console, billing, found, lines)


def print_tables(console: Console, period: Period, found: list[dict], lines: list[dict]) -> None:
    if not found:
        console.print(f"no invoices for {period}")
        return
    summary = Table(title=f"Invoices {period}", title_justify="left")
    for column in ("account_id", "invoice_id", "status", "finalized_at", "lines", "subtotal"):
        summary.add_column(column, justify="right" if column in ("lines", "subtotal") else "left")
    counts = {}
    for line in lines:
        counts[line["invoice_id"]] = counts.get(line["invoice_id"], 0) + 1
    totals: dict[str, Decimal] = {}
    for invoice in found:
        totals[invoice["currency"]] = (
            totals.get(invoice["currency"], Decimal(0)) + invoice["subtotal"]
        )
        summary.add_row(
            invoice["account_id"], invoice["invoice_id"], invoice["status"],
            cell(invoice["finalized_at"]) or "-", str(counts.get(invoice["invoice_id"], 0)),
            f"{invoice['subtotal']} {invoice['currency']}",
        )  # fmt: skip
    console.print(summary)
    detail = Table(title=f"Lines {period}", title_justify="left")
    for column in TABLE_LINE_COLUMNS:
        numeric = column in ("tier", "quantity", "unit_price", "amount")
        detail.add_column(column, justify="right" if numeric else "left")
    for line in lines:
        detail.add_row(*(cell(line[c]) or "-" for c in TABLE_LINE_COLUMNS))
    console.print(detail)
    console.print(
        "total: " + ", ".join(f"{amount} {cur}" for cur, amount in sorted(totals.items()))
    )


def roles(
    apply: Annotated[
        bool, typer.Option("--apply", help="Run the statements (server DSN only).")
    ] = False,
) -> None:
    """Print (or apply) the finance_readonly and pipeline_writer roles for this database."""
    settings = load_settings()
    statements = role_statements(DdlOptions.from_settings(settings))
    if not apply:
        for statement in statements:
            print(f"{statement};")
        return
    if settings.clickhouse_dsn.startswith("chdb:"):
        raise typer.BadParameter("the embedded engine has no access control; use a server DSN")
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        for statement in statements:
            warehouse.command(statement)
    Console().print(f"applied {len(statements)} role statements")
