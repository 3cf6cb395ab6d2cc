"""`usage-etl price-book check [PATH]`: validate a price book exactly as monthly_invoices does,
before it is put in force. Prints a summary (and WARN lines for meters of one plan that can
count the same usage) or every problem with its path in the file; exits 1 when invalid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usage_etl.invoicing.checks import overlapping_meters
from usage_etl.invoicing.price_book import PriceBookError, load_price_book
from usage_etl.settings import load_settings

app = typer.Typer(help="Price book tools.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="price-book")


@app.callback()
def _group() -> None:
    """Price book tools."""


@app.command("check")
def check(
    path: Annotated[
        Path | None,
        typer.Argument(help="Price book YAML (default: USAGE_ETL_PRICE_BOOK, else the sample)."),
    ] = None,
) -> None:
    """Validate a price book with the same rules as the invoice run."""
    target = path if path is not None else load_settings().price_book
    try:
        book = load_price_book(target)
    except PriceBookError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    defined = list(book.meters)
    typer.echo(
        f"OK {target}: version {book.version}, {book.currency}, grace {book.grace_days} days, "
        f"{len(book.plans)} plans ({', '.join(book.plans)}), default {book.default_plan}, "
        f"{len(defined)} defined meters{' (' + ', '.join(defined) + ')' if defined else ''}, "
        f"{len(book.accounts)} accounts named, {len(book.credits)} credit grants"
        + ("" if book.is_v2 else " (v1 book)")
    )
    for warning in overlapping_meters(book):
        typer.echo(f"WARN {warning}: a usage row can be billed in both")
