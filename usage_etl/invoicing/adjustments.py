"""Adjustments: late usage of a final period, billed on the first period that is not final.

For every final period P before the target period X (X = the month after the latest final
period), each (account, meter, tier) is repriced from today's usage_daily with P's own price
book (recorded when P was finalized, its meters and the plan in force for P) and compared with
what FINAL lines billed for P so far: P's usage lines plus every final adjustment line that
corrected P. A difference in quantity or amount becomes an `adjustment` line on the account's
invoice for X, with corrected_period_start = P. Adjustment lines for X are recomputed by every
run of X until X is final, so they always bring the total billed for P to exactly what P's
usage costs.

Price book v2: when P's plan has a minimum, P's true-up is recomputed too: max(0, minimum -
(P's repriced usage + the fixed fee billed for P)); the difference against the true-up billed
for P (P's `minimum` line plus final `minimum` lines correcting P) is a `minimum` line on X with
corrected_period_start = P. So the corrections add up to P's new total before credits minus
its finalized one. (A fixed fee is billed once, with P's own invoice, and never adjusted.)
"""

from __future__ import annotations

from decimal import Decimal

from usage_etl.invoicing.lines import (
    ADJUSTMENT,
    FIXED,
    MINIMUM,
    InvoiceLine,
    adjustment_charges,
    period_line,
    price_usage,
    to_line,
    true_up,
)
from usage_etl.invoicing.price_book import PriceBook
from usage_etl.invoicing.store import (
    Finalization,
    billed_charges,
    billed_period_amounts,
    meter_totals_by_period,
)
from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse


def adjustment_target(finals: dict[Period, Finalization]) -> Period | None:
    """The first period that is not final: the month after the latest final one."""
    return max(finals).next() if finals else None


def adjustment_lines(
    warehouse: Warehouse, target: Period, finals: dict[Period, Finalization], book: PriceBook
) -> list[InvoiceLine]:
    """Adjustment lines (kinds `adjustment` and corrective `minimum`) for `target`; none
    unless it is the first period that is not final."""
    if target != adjustment_target(finals):
        return []
    corrected_periods = sorted(p for p in finals if p < target)
    usage = meter_totals_by_period(warehouse, {p: finals[p].book for p in corrected_periods})
    billed = billed_charges(warehouse, target)
    billed_fixed = billed_period_amounts(warehouse, target, FIXED)
    billed_minimum = billed_period_amounts(warehouse, target, MINIMUM)
    lines: list[InvoiceLine] = []
    for corrected in corrected_periods:
        own_book = finals[corrected].book
        if own_book.currency != book.currency:
            raise ValueError(
                f"cannot bill {corrected} adjustments in {book.currency}: {corrected} was "
                f"finalized in {own_book.currency}"
            )
        recomputed = price_usage(usage.get(corrected, {}), own_book, corrected.start)
        charges = adjustment_charges(recomputed, billed.get(corrected, {}))
        lines.extend(
            to_line(c, target, ADJUSTMENT, own_book.version, own_book.currency, corrected)
            for c in charges
        )
        lines.extend(
            _minimum_corrections(
                target,
                corrected,
                own_book,
                recomputed,
                billed_fixed.get(corrected, {}),
                billed_minimum.get(corrected, {}),
            )
        )
    return lines


def _minimum_corrections(
    target: Period,
    corrected: Period,
    own_book: PriceBook,
    recomputed,
    fixed: dict[str, Decimal],
    minimum_billed: dict[str, Decimal],
) -> list[InvoiceLine]:
    usage: dict[str, Decimal] = {}
    for charge in recomputed:
        usage[charge.account_id] = usage.get(charge.account_id, Decimal(0)) + charge.amount
    lines = []
    for account in sorted(usage.keys() | minimum_billed.keys()):
        plan = own_book.plan_for(account, corrected.start)
        minimum = own_book.plan(plan).minimum
        now = true_up(minimum, usage.get(account, Decimal(0)) + fixed.get(account, Decimal(0)))
        change = now - minimum_billed.get(account, Decimal(0))
        if change:
            lines.append(period_line(account, plan, target, MINIMUM, change, own_book, corrected))
    return lines
