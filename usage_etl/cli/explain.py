"""`usage-etl explain INVOICE_ID [--line LINE_ID]`: why each line of an invoice says what it
says, from the meter's definition down to the source objects, with exact checks.

Exit codes: 0 every check holds; 1 no such invoice or line, or the warehouse cannot be read;
3 explained, but a check does not hold (usage changed after the line was computed: a stale
draft, or late usage of a final period billed as adjustments on a later invoice). Read-only.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from usage_etl.cli.output import stdout_console, table
from usage_etl.invoicing.explain import (
    InvoiceExplanation,
    LineExplanation,
    UnknownInvoiceError,
    explain_invoice,
)
from usage_etl.invoicing.price_book import PriceBookError, load_price_book
from usage_etl.settings import load_settings
from usage_etl.warehouse.client import open_warehouse

CHECK_FAILED = 3


class Format(StrEnum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)


def explain(
    invoice_id: Annotated[str, typer.Argument(help="Invoice id (inv_…).")],
    line: Annotated[str | None, typer.Option("--line", help="Only this line id (li_…).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """Explain an invoice's lines: meter, tiers, days, nodes, projects, source objects."""
    settings = load_settings()
    err = Console(stderr=True)
    try:  # only for a period whose price book was never recorded
        book = load_price_book(settings.price_book)
    except PriceBookError:
        book = None
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        try:
            explained = explain_invoice(warehouse, invoice_id, line, book)
        except (UnknownInvoiceError, LookupError) as error:
            err.print(str(error).strip("'\""), markup=False)
            raise typer.Exit(1) from None
    if fmt is Format.json:
        print(json.dumps(explained.as_dict(), indent=2))
    else:
        print_explanation(stdout_console(), explained)
    if not explained.ok:
        raise typer.Exit(CHECK_FAILED)


def print_explanation(console: Console, explained: InvoiceExplanation) -> None:
    inv = explained.invoice
    console.print(
        f"[bold]Invoice {inv['invoice_id']}[/]  account {inv['account_id']}  period "
        f"{inv['period_start']:%Y-%m}  {inv['status']}  subtotal {inv['subtotal']} "
        f"{inv['currency']}",
        highlight=False,
    )
    for line in explained.lines:
        print_line(console, line)
    for c in explained.checks:
        _print_check(console, c)


def _print_check(console: Console, c) -> None:
    mark = "[green]ok[/]" if c.ok else "[red]DIFFERS[/]"
    console.print(f"  {mark} {c.name}: {c.left} = {c.right}", highlight=False)


def _table(title: str, *columns: str) -> Table:
    text = ("day", "node_id", "region", "project_id", "object_key", "etag")
    return table(title, [(column, column not in text) for column in columns])


def print_line(console: Console, explanation: LineExplanation) -> None:
    data = explanation.as_dict()
    corrected = data["corrected_period_start"]
    corrected = f" corrects {corrected}" if corrected else ""
    console.rule(
        f"{data['kind']} {data['meter'] or ''} tier {data['tier']}{corrected}: "
        f"{data['quantity']} {data['unit']} × {data['unit_price']} = {data['amount']}  "
        f"({data['line_id']})",
        align="left",
    )
    console.print(data["rule"], highlight=False, markup=False)
    if "meter_definition" in data:
        d = data["meter_definition"]
        console.print(
            f"meter {d['meter']}: {d['multiplier']} × sum({d['measure']}) where "
            f"{d['where_text']} / {d['unit_size']} ({d['unit']})",
            highlight=False, markup=False,
        )  # fmt: skip
    if "tier_bounds" in data:
        console.print(data["tier_bounds"]["rule"], highlight=False, markup=False)
    for name, value in data["figures"].items():
        console.print(f"  {name}: {value}", highlight=False, markup=False)
    usage = data.get("usage")
    if usage:
        days = _table(f"Days of {usage['period']}", "day", "raw", "quantity", "tier part")
        for d in usage["days"]:
            days.add_row(d["day"], f"{d['raw']:,}", d["quantity"], d["tier_part"])
        nodes = _table("Per node", "node_id", "region", "raw", "quantity")
        for n in usage["nodes"]:
            nodes.add_row(n["node_id"], n["region"], f"{n['raw']:,}", n["quantity"])
        projects = _table("Per project ('' = none)", "project_id", "raw", "quantity")
        for p in usage["projects"]:
            projects.add_row(p["project_id"] or "''", f"{p['raw']:,}", p["quantity"])
        objects = _table(
            "Source objects", "day", "object_key", "etag", "counted rows", "counted",
            "redelivered", "superseded", "conflict",
        )  # fmt: skip
        for o in usage["objects"]:
            objects.add_row(
                o["day"], o["object_key"], o["etag"], str(o["counted_rows"]),
                f"{o['counted_measure']:,}", str(o["redelivered_rows"]),
                str(o["superseded_rows"]), str(o["conflict_rows"]),
            )  # fmt: skip
        for table in (days, nodes, projects, objects):
            console.print(table)
    for billed in data.get("billed", []):
        console.print(
            f"  billed by {billed['kind']} line {billed['line_id']} ({billed['period_start']}): "
            f"{billed['quantity']} for {billed['amount']}",
            highlight=False, markup=False,
        )  # fmt: skip
    for c in explanation.checks:
        _print_check(console, c)
    for note in explanation.notes:
        console.print(f"  note: {note}", highlight=False, markup=False)
