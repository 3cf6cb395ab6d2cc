"""`usage-etl`: the operator's command line. One module per command group."""

import typer

from usage_etl.cli import demo, doctor, invoices, simulate, usage, warehouse

app = typer.Typer(
    name="usage-etl",
    help="Billing-grade usage metering: simulate a fleet, run and inspect the pipeline.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


@app.callback()
def _root() -> None:
    """Billing-grade usage metering: simulate a fleet, run and inspect the pipeline."""


for module in (warehouse, simulate, demo, invoices, usage, doctor):
    module.register(app)


def main() -> None:
    with doctor.exit_on_bad_settings():
        app()
