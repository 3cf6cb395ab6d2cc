"""Asset checks of monthly_invoices: each wraps an invariant from usage_etl.invoicing.checks
and tells an operator what to do when it fails."""

from collections.abc import Callable

import dagster as dg

from usage_etl.defs.invoices.assets import INVOICES_KEY, LINES_KEY, period_of
from usage_etl.defs.partitions import monthly_partitions
from usage_etl.invoicing import checks
from usage_etl.resources import ClickHouseResource


def _result(
    outcome: checks.CheckOutcome, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.summary,
        metadata=outcome.metadata(),
    )


def _check(
    asset: dg.AssetKey,
    name: str,
    description: str,
    invariant: Callable,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
):
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
        return _result(invariant(clickhouse.get_warehouse(), period_of(context)), severity)

    return _run


conservation = _check(
    LINES_KEY,
    "quantities_conserved",
    "For each account and meter, the period's usage lines plus every adjustment correcting "
    "the period add up to the period's usage in usage_daily (each meter's `where` filter and "
    "multiplier applied), rounded per tier.",
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
    "Each invoice's subtotal equals the sum of its lines' amounts, credits included.",
    checks.subtotals,
)
credits_within_grants = _check(
    LINES_KEY,
    "credits_within_grants",
    "Across all periods, the credit lines of a grant never consume more than its amount.",
    checks.credits_within_grants,
)
meters_disjoint = _check(
    LINES_KEY,
    "meters_disjoint",
    "WARN when two meters billed by one plan can count the same usage row.",
    checks.meter_overlaps,
    dg.AssetCheckSeverity.WARN,
)
