"""`usage-etl bill ACCOUNT [--period YYYY-MM]`: cost to date of a period (default: the one
as-of falls in), the previous final bill and the projected period-end total.

Read-only (no migrations, nothing written): the cost to date is the invoice priced now from
the usage published so far with the price book in force (USAGE_ETL_PRICE_BOOK).
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from usage_etl.cli.output import Format, stdout_console, table
from usage_etl.invoicing.bill import BILL_LINE_COLUMNS, Bill, account_bill, open_period
from usage_etl.invoicing.exact import exact_text
from usage_etl.invoicing.export import cell
from usage_etl.invoicing.price_book import load_price_book
from usage_etl.periods import Period
from usage_etl.settings import load_settings, parse_as_of
from usage_etl.warehouse.client import open_warehouse

CSV_COLUMNS = ("section", *BILL_LINE_COLUMNS)


def register(app: typer.Typer) -> None:
    app.command("bill")(bill)


def bill(
    account: Annotated[str, typer.Argument(help="Account (tenant) id.")],
    period: Annotated[
        str | None, typer.Option("--period", help="Billing period 2026-10 (default: as-of's).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="ISO-8601 UTC 'now' (default USAGE_ETL_AS_OF).")
    ] = None,
) -> None:
    """Cost to date, previous final bill and projected period-end total of one account."""
    settings = load_settings()
    try:
        now = parse_as_of(as_of) or parse_as_of(settings.as_of)
        billing = Period.parse(period) if period else open_period((now or _utcnow()).date())
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    book = load_price_book(settings.price_book)  # errors: one line, exit 2 (cli/errors.py)
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        found = account_bill(warehouse, book, account, billing)
    if fmt is Format.json:
        print(json.dumps(as_json(found), indent=2))
    elif fmt is Format.csv:
        write_csv(found)
    else:
        print_bill(stdout_console(), found)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _lines(lines: list[dict]) -> list[dict]:
    return [{c: cell(line[c]) for c in BILL_LINE_COLUMNS} for line in lines]


def as_json(found: Bill) -> dict:
    out = {
        "account_id": found.account_id,
        "period": found.period.label,
        "plan": found.plan,
        "currency": found.currency,
        "status": found.status,
        "to_date": cell(found.to_date),
        "lines": _lines(found.lines),
        "previous": None,
        "projection": None,
        "notes": found.notes,
    }
    if found.previous:
        out["previous"] = {k: cell(v) for k, v in found.previous.items()}
    p = found.projection
    if p:
        out["projection"] = {
            "days_published": p.days_published,
            "period_days": p.period_days,
            "factor": exact_text(p.factor),
            "total": cell(p.total),
            "meters": {
                name: {"to_date": exact_text(now), "projected": exact_text(pj), "unit": unit}
                for name, (now, pj, unit) in p.quantities.items()
            },
            "lines": _lines(p.lines),
        }
    return out


def write_csv(found: Bill) -> None:
    """The cost-to-date lines, then the projected lines; `section` says which."""
    writer = csv.DictWriter(sys.stdout, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for line in _lines(found.lines):
        writer.writerow({"section": "to_date", **line})
    for line in _lines(found.projection.lines if found.projection else []):
        writer.writerow({"section": "projection", **line})


def print_bill(console: Console, found: Bill) -> None:
    numeric = ("tier", "quantity", "unit_price", "amount")
    lines = table(
        f"Bill {found.account_id} {found.period} ({found.status}, plan {found.plan})",
        [(column, column in numeric) for column in BILL_LINE_COLUMNS],
    )
    for line in _lines(found.lines):
        lines.add_row(*(str(line[c]) if line[c] not in (None, "") else "-"
                        for c in BILL_LINE_COLUMNS))  # fmt: skip
    console.print(lines)
    console.print(f"cost to date: {found.to_date} {found.currency}", highlight=False)
    p = found.projection
    if p:
        console.print(
            f"projected period-end total: {p.total} {found.currency} (each meter scaled by "
            f"{p.period_days}/{p.days_published} published days)",
            highlight=False,
        )
    if found.previous:
        prev = found.previous
        console.print(
            f"previous final bill: {prev['period_start']:%Y-%m} {prev['subtotal']} "
            f"{prev['currency']} ({prev['invoice_id']})",
            highlight=False,
        )
    else:
        console.print("previous final bill: none")
    for note in found.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
