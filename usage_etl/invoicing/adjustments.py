"""Adjustments: late usage of a final period, billed on the first period that is not final.

For every final period P before the target period X (X = the month after the latest final
period), each (account, meter, tier) is repriced from today's usage_daily with P's own price
book (recorded when P was finalized) and compared with what FINAL lines billed for P so far:
P's usage lines plus every final adjustment line that corrected P. A difference in quantity or
amount becomes an `adjustment` line on the account's invoice for X, with
corrected_period_start = P. Adjustment lines for X are recomputed by every run of X until X is
final, so they always bring the total billed for P to exactly what P's usage costs.
"""

from __future__ import annotations

from usage_etl.invoicing.lines import (
    ADJUSTMENT,
    InvoiceLine,
    adjustment_charges,
    price_usage,
    to_line,
)
from usage_etl.invoicing.periods import Period
from usage_etl.invoicing.store import Finalization, billed_charges, meter_totals_by_period
from usage_etl.pricing import PriceBook
from usage_etl.warehouse.client import Warehouse


def adjustment_target(finals: dict[Period, Finalization]) -> Period | None:
    """The first period that is not final: the month after the latest final one."""
    return max(finals).next() if finals else None


def adjustment_lines(
    warehouse: Warehouse, target: Period, finals: dict[Period, Finalization], book: PriceBook
) -> list[InvoiceLine]:
    """Adjustment lines for `target`; none unless it is the first period that is not final."""
    if target != adjustment_target(finals):
        return []
    usage = meter_totals_by_period(warehouse, target)
    billed = billed_charges(warehouse, target)
    lines: list[InvoiceLine] = []
    for corrected in sorted(finals):
        own_book = finals[corrected].book
        if own_book.currency != book.currency:
            raise ValueError(
                f"cannot bill {corrected} adjustments in {book.currency}: {corrected} was "
                f"finalized in {own_book.currency}"
            )
        charges = adjustment_charges(
            price_usage(usage.get(corrected, {}), own_book), billed.get(corrected, {})
        )
        lines.extend(
            to_line(c, target, ADJUSTMENT, own_book.version, own_book.currency, corrected)
            for c in charges
        )
    return lines
