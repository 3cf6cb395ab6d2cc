"""Placeholder: the monthly_invoices assets (issue 5) replace this module."""

import dagster as dg

from usage_etl.defs.jobs import INVOICING_GROUP
from usage_etl.defs.partitions import monthly_partitions
from usage_etl.resources import ClickHouseResource


@dg.asset(
    group_name=INVOICING_GROUP,
    partitions_def=monthly_partitions,
    pool="warehouse",
    kinds={"clickhouse"},
)
def invoice_line_items(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource):
    """Invoice line items for one billing period (contract §5)."""
    clickhouse.get_warehouse()
    return dg.MaterializeResult(metadata={"period": context.partition_key})
