"""Deadline checks: yesterday's usage_daily published by 07:30 UTC, last month's invoices final
by period_end + grace_days + 1 day (usage_etl/alerting/deadlines.py), each over a short
look-back of due partitions (USAGE_ETL_DEADLINE_LOOKBACK_DAYS / _MONTHS).

The `partition_deadlines` sensor evaluates them from the Dagster instance every 5 minutes and
reports each result change; the contract jobs leave them out (defs/jobs.py). They can also be
executed by hand (asset page → Checks → Execute): they read the instance, never ClickHouse, so
they need no `warehouse` slot. Unpartitioned on purpose: one result says which partitions of
the look-back are late.
"""

import dagster as dg

from usage_etl.defs.alerting.verdicts import invoice_verdict, usage_verdict
from usage_etl.defs.resources import ClockResource, PriceBookResource
from usage_etl.defs.vocabulary import (
    INVOICE_DEADLINE_CHECK,
    INVOICE_LINES_KEY,
    USAGE_DAILY_KEY,
    USAGE_DEADLINE_CHECK,
)
from usage_etl.invoicing.price_book import load_price_book
from usage_etl.settings import AlertSettings


def invoice_grace_days(settings: AlertSettings, price_book: PriceBookResource) -> int:
    if settings.invoice_grace_days is not None:
        return settings.invoice_grace_days
    return load_price_book(price_book.resolved_path()).grace_days


@dg.asset_check(
    asset=USAGE_DAILY_KEY,
    name=USAGE_DEADLINE_CHECK,
    blocking=False,
    description="Each recent day is published by its deadline: the next day at "
    "USAGE_ETL_USAGE_DEADLINE (07:30 UTC). Evaluated by the partition_deadlines sensor.",
)
def usage_published_by_deadline(
    context: dg.AssetCheckExecutionContext, clock: ClockResource
) -> dg.AssetCheckResult:
    return usage_verdict(context.instance, clock.now(), AlertSettings()).check_result()


@dg.asset_check(
    asset=INVOICE_LINES_KEY,
    name=INVOICE_DEADLINE_CHECK,
    blocking=False,
    description="Each recent month's invoice lines are final by period_end + grace_days + "
    "USAGE_ETL_INVOICE_DEADLINE_EXTRA_DAYS (1). Evaluated by the partition_deadlines sensor.",
)
def invoices_final_by_deadline(
    context: dg.AssetCheckExecutionContext, clock: ClockResource, price_book: PriceBookResource
) -> dg.AssetCheckResult:
    settings = AlertSettings()
    grace_days = invoice_grace_days(settings, price_book)
    return invoice_verdict(context.instance, clock.now(), grace_days, settings).check_result()
