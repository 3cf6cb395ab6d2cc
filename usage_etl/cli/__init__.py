"""`usage-etl`: the operator's command line. One module per command group.

Errors: a user's mistake is one line on stderr and exit status 2; `--debug` shows the
traceback instead (usage_etl/cli/errors.py).
"""

from typing import Annotated

import typer

from usage_etl.cli import (
    bill,
    demo,
    doctor,
    explain,
    invoices,
    price_book,
    simulate,
    usage,
    warehouse,
)
from usage_etl.cli.errors import CliGroup

app = typer.Typer(
    name="usage-etl",
    cls=CliGroup,
    help="Billing-grade usage metering: simulate a fleet, run and inspect the pipeline.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="On an error, show the full traceback (also USAGE_ETL_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Billing-grade usage metering: simulate a fleet, run and inspect the pipeline."""


for module in (warehouse, simulate, demo, invoices, usage, price_book, explain, bill, doctor):
    module.register(app)


def main() -> None:
    app()
