"""Placeholder: the daily_usage assets (issue 4) replace this module."""

import dagster as dg

from usage_etl.defs.jobs import USAGE_GROUP
from usage_etl.defs.partitions import daily_partitions
from usage_etl.resources import ClickHouseResource


@dg.asset(
    group_name=USAGE_GROUP, partitions_def=daily_partitions, pool="warehouse", kinds={"clickhouse"}
)
def usage_daily(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource):
    """Deduplicated daily usage (contract §4)."""
    clickhouse.get_warehouse()
    return dg.MaterializeResult(metadata={"day": context.partition_key})
