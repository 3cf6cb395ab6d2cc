"""`usage-etl invoices`: print a period's invoices and lines, `usage-etl invoices export`: the
finance export files to a local folder; `usage-etl roles`: the finance read-only and pipeline
roles for ClickHouse server deployments."""

from __future__ import annotations

import csv
import difflib
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from usage_etl.cli.errors import UserError
from usage_etl.cli.output import Format, csv_value, json_value, note, stdout_console, table
from usage_etl.invoicing.export import INVOICE_COLUMNS, export_period
from usage_etl.invoicing.lines import LINE_COLUMNS
from usage_etl.invoicing.roles import role_statements
from usage_etl.invoicing.statement import statement_rows
from usage_etl.invoicing.store import LINES, lines_checksum, read_invoices, read_lines
from usage_etl.periods import Period
from usage_etl.settings import load_settings
from usage_etl.warehouse.client import Warehouse, open_warehouse
from usage_etl.warehouse.migrations import DdlOptions

TABLE_LINE_COLUMNS = (
    "account_id", "kind", "corrected_period_start", "meter", "tier", "quantity", "unit",
    "unit_price", "amount", "status",
)  # fmt: skip
EXPORTS_ROOT = "exports/invoices/"


invoices_app = typer.Typer(
    help="Print a period's invoices and lines; `export` writes the finance files to a folder."
)


def register(app: typer.Typer) -> None:
    app.add_typer(invoices_app, name="invoices")
    app.command("roles")(roles)


def _period(value: str) -> Period:
    try:
        return Period.parse(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--period") from None


def _require_account(warehouse: Warehouse, account: str) -> None:
    """An account with no invoice line in any period is unknown: say so, suggest close ones."""
    table_name = warehouse.table(LINES)
    if warehouse.query_rows(
        f"SELECT 1 FROM {table_name} WHERE account_id = {{a:String}} LIMIT 1", {"a": account}
    ):
        return
    known = [
        r[0]
        for r in warehouse.query_rows(
            f"SELECT DISTINCT account_id FROM {table_name} ORDER BY account_id LIMIT 100000"
        )
    ]
    close = difflib.get_close_matches(account, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (it has no invoice in any period)"
    raise UserError(f"unknown account {account!r}{hint}")


@invoices_app.callback(invoke_without_command=True)
def invoices(
    ctx: typer.Context,
    period: Annotated[str | None, typer.Option("--period", help="Billing period: 2026-10.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="table, csv (the lines) or json.")
    ] = Format.table,
) -> None:
    """Print the invoices and invoice lines of one billing period (`--period 2026-10`)."""
    if ctx.invoked_subcommand is not None:
        return
    if period is None:
        raise typer.BadParameter("a period is required, e.g. 2026-10", param_hint="--period")
    billing = _period(period)
    settings = load_settings()
    # Read-only on purpose (no migrations): finance users hold SELECT on these tables only.
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        if account is not None:
            _require_account(warehouse, account)
        found = read_invoices(warehouse, billing, account)
        lines = read_lines(warehouse, billing, account)
    if fmt is Format.json:
        payload = {
            "period": billing.label,
            "invoices": [{c: json_value(i[c]) for c in INVOICE_COLUMNS} for i in found],
            "lines": [{c: json_value(line[c]) for c in LINE_COLUMNS} for line in lines],
        }
        print(json.dumps(payload, indent=2))
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(LINE_COLUMNS)
        writer.writerows([csv_value(line[c]) for c in LINE_COLUMNS] for line in lines)
    else:
        print_tables(stdout_console(), billing, found, lines, account)
    if not found and fmt is not Format.table:
        who = f"account {account}" if account else "any account"
        note(f"no invoices for {who} in {billing}")


class _Folder:
    """`put_object` into a local folder, so the S3 export code writes the same files here."""

    def __init__(self, root: Path):
        self.root = root
        self.written: list[Path] = []

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: object) -> None:
        path = self.root / Key.removeprefix(EXPORTS_ROOT)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(Body)
        tmp.replace(path)
        self.written.append(path)


def export_to_folder(warehouse: Warehouse, period: Period, folder: Path) -> list[Path]:
    """The period's CSV + Parquet files (lines, invoices, usage statement) and manifest, as the
    `invoice_exports` asset writes them to S3, under `folder/period=YYYY-MM/`. Returns the files
    written, manifest last."""
    lines = read_lines(warehouse, period)
    found = read_invoices(warehouse, period)
    statuses = sorted({i["status"] for i in found})
    target = _Folder(folder)
    export_period(
        target, "local", "", period, lines, found,
        {"status": "/".join(statuses) or "empty", "lines_checksum": lines_checksum(lines)},
        statement=statement_rows(warehouse, period, lines),
    )  # fmt: skip
    return target.written


@invoices_app.command("export")
def export(
    period: Annotated[str, typer.Option("--period", help="Billing period: 2026-10.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write period=YYYY-MM/ into.")],
) -> None:
    """Write a period's lines, invoices and usage statement as CSV and Parquet, with a sha256
    manifest."""
    billing = _period(period)
    if to.exists() and not to.is_dir():
        raise typer.BadParameter(f"{to} exists and is not a folder", param_hint="--to")
    settings = load_settings()
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        written = export_to_folder(warehouse, billing, to)
    manifest = json.loads(written[-1].read_text())
    rows = manifest["files"]["invoice_line_items.csv"]["rows"]
    print(f"exported {billing}: {rows} lines, status {manifest['status']} -> {written[-1].parent}")


def print_tables(
    console: Console, period: Period, found: list[dict], lines: list[dict], account=None
) -> None:
    if not found:
        console.print(f"no invoices for {period}" + (f" (account {account})" if account else ""))
        return
    summary = table(
        f"Invoices {period}",
        [(c, c in ("lines", "subtotal"))
         for c in ("account_id", "invoice_id", "status", "finalized_at", "lines", "subtotal")],
    )  # fmt: skip
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
            csv_value(invoice["finalized_at"]) or "-", str(counts.get(invoice["invoice_id"], 0)),
            f"{invoice['subtotal']} {invoice['currency']}",
        )  # fmt: skip
    console.print(summary)
    numeric = ("tier", "quantity", "unit_price", "amount")
    detail = table(f"Lines {period}", [(c, c in numeric) for c in TABLE_LINE_COLUMNS])
    for line in lines:
        detail.add_row(*(csv_value(line[c]) or "-" for c in TABLE_LINE_COLUMNS))
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
        raise UserError("the embedded engine has no access control; --apply needs a server DSN")
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        for statement in statements:
            warehouse.command(statement)
    Console().print(f"applied {len(statements)} role statements")
