"""The monthly_invoices assets (contract §5): invoice lines + invoices, and their export."""

from collections.abc import Iterator
from decimal import Decimal

import dagster as dg

from usage_etl.defs.column_schemas import INVOICE_LINE_ITEMS, INVOICES, column_schema
from usage_etl.defs.resources import (
    ClickHouseResource,
    ClockResource,
    LandingResource,
    PriceBookResource,
)
from usage_etl.defs.vocabulary import (
    INVOICE_EXPORTS_KEY,
    INVOICE_LINES_KEY,
    INVOICES_KEY,
    INVOICING_GROUP,
    POOL,
    USAGE_DAILY_KEY,
    monthly_partitions,
    period_of,
)
from usage_etl.invoicing.completeness import check_completeness
from usage_etl.invoicing.price_book import load_price_book
from usage_etl.invoicing.run import PeriodOutcome, run_period
from usage_etl.invoicing.store import lines_checksum, read_invoices, read_lines
from usage_etl.landing import Landing

PREVIEW_ROWS = 10


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            INVOICE_LINES_KEY,
            deps=[USAGE_DAILY_KEY],
            description="Invoice line items of one billing period (contract §5): usage lines, "
            "adjustment lines for late usage of final periods, and (price book v2) fixed fees, "
            "minimum true-ups and credits. Draft until as-of >= period_end + grace_days, then "
            "final and never rewritten.",
            group_name=INVOICING_GROUP,
            kinds={"clickhouse"},
            owners=["team:finance", "team:metering"],
            metadata=column_schema(INVOICE_LINE_ITEMS),
        ),
        dg.AssetSpec(
            INVOICES_KEY,
            deps=[INVOICE_LINES_KEY],
            description="One row per invoice (a view over the lines: subtotal = sum of lines).",
            group_name=INVOICING_GROUP,
            kinds={"clickhouse"},
            owners=["team:finance", "team:metering"],
            metadata=column_schema(INVOICES),
        ),
    ],
    partitions_def=monthly_partitions,
    pool=POOL,
)
def invoice_period(
    context: dg.AssetExecutionContext,
    clickhouse: ClickHouseResource,
    landing: LandingResource,
    price_book: PriceBookResource,
    clock: ClockResource,
) -> Iterator[dg.MaterializeResult]:
    period = period_of(context)
    book = load_price_book(price_book.resolved_path())
    as_of = clock.now()
    warehouse = clickhouse.get_warehouse()
    outcome = run_period(
        warehouse,
        book,
        period,
        as_of,
        context.run.run_id,
        lambda: check_completeness(
            warehouse, Landing(landing.get_client(), landing.bucket, landing.prefix), period
        ),
    )
    if not outcome.checksum_ok:
        raise dg.Failure(
            description=f"final invoice lines of {period} changed since finalization: stop "
            "billing from them and restore them from the finalization export",
            metadata={"checksum_now": outcome.checksum},
        )
    if outcome.blockers:
        raise dg.Failure(
            description=f"{period} is due for finalization but stays draft: "
            + " | ".join(outcome.blockers),
            metadata={"status": outcome.status, "blockers": "\n".join(outcome.blockers)},
        )
    lines = read_lines(warehouse, period)
    invoices = read_invoices(warehouse, period)
    context.log.info(f"{period}: {len(invoices)} invoices, {len(lines)} lines, {outcome.status}")
    yield dg.MaterializeResult(
        asset_key=INVOICE_LINES_KEY, metadata=lines_metadata(outcome, lines, book)
    )
    yield dg.MaterializeResult(asset_key=INVOICES_KEY, metadata=invoices_metadata(invoices))


def lines_metadata(outcome: PeriodOutcome, lines: list[dict], book) -> dict:
    return {
        "period": str(outcome.period),
        "status": outcome.status,
        "written": outcome.written,
        "lines": len(lines),
        "adjustment_lines": sum(1 for line in lines if line["kind"] == "adjustment"),
        "credit_lines": sum(1 for line in lines if line["kind"] == "credit"),
        "accounts": len({line["account_id"] for line in lines}),
        "lines_checksum": outcome.checksum,
        "price_book_version": book.version,
        "final_due_at": outcome.period.final_due_at(book.grace_days).isoformat(),
    }


def invoices_metadata(invoices: list[dict]) -> dict:
    totals: dict[str, Decimal] = {}
    for invoice in invoices:
        totals[invoice["currency"]] = (
            totals.get(invoice["currency"], Decimal(0)) + invoice["subtotal"]
        )
    top = sorted(invoices, key=lambda i: (-i["subtotal"], i["account_id"]))[:PREVIEW_ROWS]
    preview = ["| account | subtotal | status |", "|---|---:|---|"]
    preview += [
        f"| {i['account_id']} | {i['subtotal']} {i['currency']} | {i['status']} |" for i in top
    ]
    return {
        "invoices": len(invoices),
        "totals": ", ".join(f"{amount} {cur}" for cur, amount in sorted(totals.items())) or "0",
        "top_invoices": dg.MetadataValue.md("\n".join(preview)),
    }


@dg.asset(
    key=INVOICE_EXPORTS_KEY,
    deps=[INVOICE_LINES_KEY, INVOICES_KEY],
    group_name=INVOICING_GROUP,
    partitions_def=monthly_partitions,
    pool=POOL,
    kinds={"s3", "parquet", "csv"},
    owners=["team:finance", "team:metering"],
    description="The period's lines, invoices and usage statement as CSV and Parquet under "
    "exports/invoices/period=YYYY-MM/ next to the landing prefix, with a sha256 manifest.",
)
def invoice_exports(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, landing: LandingResource
) -> dg.MaterializeResult:
    # Imported here: they import pyarrow (with numpy, ~0.2 CPU-s), which no other asset of
    # the code location needs; every process that loads the definitions would pay for it.
    from usage_etl.invoicing.export import export_period
    from usage_etl.invoicing.statement import statement_rows

    period = period_of(context)
    warehouse = clickhouse.get_warehouse()
    lines = read_lines(warehouse, period)
    invoices = read_invoices(warehouse, period)
    statuses = sorted({i["status"] for i in invoices})
    result = export_period(
        landing.get_client(),
        landing.bucket,
        landing.prefix,
        period,
        lines,
        invoices,
        {"status": "/".join(statuses) or "empty", "lines_checksum": lines_checksum(lines)},
        statement=statement_rows(warehouse, period, lines),
    )
    return dg.MaterializeResult(
        metadata={
            "url": dg.MetadataValue.url(result.url),
            "files": dg.MetadataValue.json(result.manifest["files"]),
            "status": result.manifest["status"],
        }
    )
