"""Asset checks of monthly_invoices: each wraps an invariant from usage_etl.invoicing.checks
and tells an operator what to do when it fails."""

from collections.abc import Callable

import dagster as dg

from usage_etl.defs.resources import ClickHouseResource
from usage_etl.defs.vocabulary import (
    INVOICE_LINES_KEY,
    INVOICES_KEY,
    POOL,
    monthly_partitions,
    period_of,
)
from usage_etl.invoicing import checks

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _result(outcomes: list[tuple[checks.CheckOutcome, dg.AssetCheckSeverity]]):
    """One check result from several invariants: passed if all pass; ERROR if an ERROR
    invariant failed, else WARN."""
    failed = [(o, sev) for o, sev in outcomes if not o.passed]
    shown = [o for o, _ in failed] or [o for o, _ in outcomes]
    merged = checks.CheckOutcome(
        passed=not failed,
        summary="; ".join(o.summary for o in shown),
        action=" | ".join(o.action for o in shown if o.action),
        details=[d for o in shown for d in o.details],
    )
    relevant = failed or outcomes  # a passing check keeps its declared severity
    severity = ERROR if any(sev == ERROR for _, sev in relevant) else WARN
    return dg.AssetCheckResult(
        passed=merged.passed,
        severity=severity,
        description=merged.summary,
        metadata=merged.metadata(),
    )


def _check(
    asset: dg.AssetKey,
    name: str,
    description: str,
    invariant: Callable,
    *more: tuple[Callable, dg.AssetCheckSeverity],
    severity: dg.AssetCheckSeverity = ERROR,
):
    invariants = [(invariant, severity), *more]

    @dg.asset_check(
        asset=asset,
        name=name,
        description=description,
        partitions_def=monthly_partitions,
        pool=POOL,
    )
    def _run(
        context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
    ) -> dg.AssetCheckResult:
        warehouse, period = clickhouse.get_warehouse(), period_of(context)
        return _result([(check(warehouse, period), sev) for check, sev in invariants])

    return _run


conservation = _check(
    INVOICE_LINES_KEY,
    "quantities_conserved",
    "For each account and meter, the period's usage lines plus every adjustment correcting "
    "the period add up to the period's usage in usage_daily (each meter's `where` filter and "
    "multiplier applied), rounded per tier.",
    checks.conservation,
)
usage_lines_positive = _check(
    INVOICE_LINES_KEY,
    "usage_lines_positive",
    "No usage line has a negative amount or a non-positive quantity.",
    checks.usage_amounts,
)
final_lines_unchanged = _check(
    INVOICE_LINES_KEY,
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
    INVOICE_LINES_KEY,
    "credits_within_grants",
    "Across all periods (draft and final), the credit lines of each grant used in the period "
    "consume at most the grant's amount, and each names a grant of the period's price book.",
    checks.credits_within_grants,
)
meters_disjoint = _check(
    INVOICE_LINES_KEY,
    "meters_disjoint",
    "WARN: no plan of the period's price book bills two meters that can count the same usage "
    "row (same measure, `where` conditions that admit a common row). Meters are independent "
    "by contract, so an overlap may be intended; the check names each pair to review.",
    checks.meter_overlaps,
    severity=WARN,
)
