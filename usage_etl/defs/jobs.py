"""The two contract jobs (§6). Each selects an asset group, so new assets and checks in a group
join their job without editing this file.

Both use the in-process executor: steps are sequential anyway, and one process per run is
what the embedded ClickHouse engine allows (one process per engine path)."""

import dagster as dg

from usage_etl.defs.vocabulary import (
    DAILY_USAGE_JOB,
    INVOICE_DEADLINE_CHECK,
    INVOICE_LINES_KEY,
    INVOICING_GROUP,
    JOB_TAG,
    MONTHLY_INVOICES_JOB,
    USAGE_DAILY_KEY,
    USAGE_DEADLINE_CHECK,
    USAGE_GROUP,
    daily_partitions,
    monthly_partitions,
)

# The deadline checks (defs/alerting) are judged by the partition_deadlines sensor, not by runs.
DEADLINE_CHECKS = dg.AssetSelection.checks(
    dg.AssetCheckKey(USAGE_DAILY_KEY, USAGE_DEADLINE_CHECK),
    dg.AssetCheckKey(INVOICE_LINES_KEY, INVOICE_DEADLINE_CHECK),
)

daily_usage = dg.define_asset_job(
    name=DAILY_USAGE_JOB,
    selection=dg.AssetSelection.groups(USAGE_GROUP) - DEADLINE_CHECKS,
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,
    description="Ingest one UTC day of node rollups, dedupe them and publish usage_daily, "
    "with the day's checks.",
    tags={JOB_TAG: DAILY_USAGE_JOB},
)

monthly_invoices = dg.define_asset_job(
    name=MONTHLY_INVOICES_JOB,
    selection=dg.AssetSelection.groups(INVOICING_GROUP) - DEADLINE_CHECKS,
    partitions_def=monthly_partitions,
    executor_def=dg.in_process_executor,
    description="Price one calendar month of usage into invoice lines and invoices (draft, "
    "final, adjustments), with their checks.",
    tags={JOB_TAG: MONTHLY_INVOICES_JOB},
)
