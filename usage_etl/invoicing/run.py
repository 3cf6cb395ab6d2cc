"""One run of `monthly_invoices` for one period, independent of Dagster (tests, CLI, asset).

Order of a run: a final period is never written again (its checksum is verified instead);
otherwise the period's usage lines (+ adjustments if it is the first period that is not
final) are computed; if the as-of time has reached period_end + grace_days and nothing blocks
it, they are published `final` and the finalization is logged with a checksum; else they are
published `draft`, and the blockers are returned for the caller to fail the run with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from usage_etl.invoicing.adjustments import adjustment_lines
from usage_etl.invoicing.completeness import Completeness
from usage_etl.invoicing.lines import (
    ADJUSTMENT,
    DRAFT,
    FINAL,
    InvoiceLine,
    credit_lines,
    fee_lines,
    usage_lines,
    with_status,
)
from usage_etl.invoicing.price_book import PriceBook
from usage_etl.invoicing.store import (
    Finalization,
    credits_consumed,
    finalizations,
    meter_totals,
    periods_with_lines,
    periods_with_usage,
    publish_lines,
    record_publication,
    stored_checksum,
)
from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse


@dataclass
class PeriodOutcome:
    period: Period
    status: str  # draft | final
    written: bool  # False: the period was already final and nothing was written
    lines: list[InvoiceLine] = field(default_factory=list)
    checksum: str = ""
    checksum_ok: bool = True  # a final period's lines still match their finalization
    blockers: list[str] = field(default_factory=list)
    completeness: Completeness | None = None

    @property
    def adjustments(self) -> list[InvoiceLine]:
        return [line for line in self.lines if line.kind == ADJUSTMENT]

    def totals(self) -> dict[str, Decimal]:
        sums: dict[str, Decimal] = {}
        for line in self.lines:  # per currency
            sums[line.currency] = sums.get(line.currency, Decimal(0)) + line.amount
        return sums


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def finalization_blockers(
    warehouse: Warehouse,
    period: Period,
    finals: dict[Period, Finalization],
    completeness: Completeness,
) -> list[str]:
    blockers = []
    # Periods with draft lines count too: this period's credits depend on what they consumed.
    pending = periods_with_usage(warehouse, period) | periods_with_lines(warehouse, period)
    earlier = sorted(p for p in pending if p not in finals)
    if earlier:
        blockers.append(
            "earlier periods with usage are not final yet (finalize them first): "
            + ", ".join(str(p) for p in earlier)
        )
    if not completeness.complete:
        blockers.append(
            f"usage of {period} is incomplete ({completeness.describe()}); re-run daily_usage "
            "for these days: " + ", ".join(d.isoformat() for d in completeness.incomplete_days)
        )
    return blockers


def period_lines(
    warehouse: Warehouse, book: PriceBook, period: Period, finals: dict[Period, Finalization]
) -> list[InvoiceLine]:
    """Every line of the period's invoices as this run computes them (status draft): usage,
    adjustments (if it is the first period that is not final), fixed fees, minimum true-ups,
    and the credits that bring each invoice's total towards 0."""
    usage = usage_lines(period, meter_totals(warehouse, period, book), book)
    adjustments = adjustment_lines(warehouse, period, finals, book)
    accounts = {line.account_id for line in usage + adjustments}
    lines = usage + adjustments + fee_lines(period, book, accounts, usage)
    grants = {grant.id for grant in book.credits}
    consumed = credits_consumed(warehouse, period, grants) if grants else {}
    return lines + credit_lines(period, book, lines, consumed)


def run_period(
    warehouse: Warehouse,
    book: PriceBook,
    period: Period,
    as_of: datetime,
    run_id: str,
    completeness: Callable[[], Completeness],
) -> PeriodOutcome:
    finals = finalizations(warehouse)
    if period in finals:
        return verify_final(warehouse, finals[period])
    lines = period_lines(warehouse, book, period, finals)
    blockers: list[str] = []
    report = None
    if period.is_final_due(as_of, book.grace_days):
        report = completeness()
        blockers = finalization_blockers(warehouse, period, finals, report)
    status = FINAL if period.is_final_due(as_of, book.grace_days) and not blockers else DRAFT
    computed_at = now_ms()
    lines = with_status(lines, status, computed_at)
    publish_lines(warehouse, period, lines, run_id)
    checksum, count = stored_checksum(warehouse, period)
    record_publication(
        warehouse,
        {
            "period_start": period.start,
            "period_end": period.end,
            "status": status,
            "finalized_at": computed_at if status == FINAL else None,
            "lines_checksum": checksum,
            "line_count": count,
            "adjustment_lines": sum(1 for line in lines if line.kind == ADJUSTMENT),
            "price_book_version": book.version,
            "price_book": book.canonical_json(),
            "as_of": as_of,
            "run_id": run_id,
            "recorded_at": datetime.now(UTC),
        },
    )
    return PeriodOutcome(period, status, True, lines, checksum, True, blockers, report)


def verify_final(warehouse: Warehouse, final: Finalization) -> PeriodOutcome:
    """A final period is only re-read: its lines must still match their finalization."""
    checksum, _ = stored_checksum(warehouse, final.period)
    return PeriodOutcome(final.period, FINAL, False, [], checksum, checksum == final.lines_checksum)
