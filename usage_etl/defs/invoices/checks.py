"""Asset checks of monthly_invoices: each wraps an invariant from usage_etl.invoicing.checks
and tells an operator what to do when it fails."""

from collections.abc import Callable

import dagster as dg

from usage_etl.defs.invoices.assets import INVOICES_KEY, LINES_KEY, period_of
from usage_etl.defs.partitions import monthly_partitions
from usage_etl.invoicing import checks
from usage_etl.resources import ClickHouseResource


def _result(outcome: checks.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.summary,
        metadata=outcome.metadata(),
    )


def _check(asset: dg.AssetKey, name: str, description: str, invariant: Callable):
    @dg.asset_check(
        asset=asset,
        name=name,
        description=description,
        partitions_def=monthly_partitions,
        pool="warehouse",
    )
    def _run(
        context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
    ) -> dg.AssetCheckResult:
        return _result(invariant(clickhouse.get_warehouse(), period_of(context)))

    return _run


conservation = _check(
    LINES_KEY,
    "quantities_conserved",
    "For each account and meter, the period's usage lines plus every adjustment correcting "
    "the period add up to the period's usage in usage_daily, rounded per tier.",
    checks.conservation,
)
usage_lines_positive = _check(
    LINES_KEY,
    "usage_lines_positive",
    "No usage line has a negative amount or a non-positive quantity.",
    checks.usage_amounts,
)
final_lines_unchanged = _check(
    LINES_KEY,
    "final_lines_unchanged",
    "A final period's lines still match the checksum recorded at finalization.",
    checks.final_unchanged,
)
subtotals_match_lines = _check(
    INVOICES_KEY,
    "subtotal_equals_lines",
    "Each invoice's subtotal equals the sum of its lines' amounts.",
    checks.subtotals,
)
