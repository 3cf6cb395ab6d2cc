"""An account's bill: cost to date of a period, the previous final bill, and a projection.

* Cost to date: the invoice of the period as `monthly_invoices` would compute it now from the
  usage published so far (`run.period_lines`: usage, adjustments, fixed fee, true-up,
  credits), nothing written. A period that is already final shows its stored final lines.
* Previous final bill: the account's latest final invoice of an earlier period.
* Projection (open periods with published days): every meter's exact quantity is scaled by
  D / d, D = days of the period, d = days of the period with published usage (days
  daily_usage has published, whoever used them), and priced through the plan's tiers by the
  invoicing code; the fixed fee, the minimum true-up (on the projected usage), the current
  adjustment lines as they stand (not scaled) and the credits the projected total would consume
  are added exactly as on an invoice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction

from usage_etl.invoicing.lines import (
    ADJUSTMENT,
    MINIMUM,
    USAGE,
    Charge,
    InvoiceLine,
    credit_lines,
    fee_lines,
    to_line,
)
from usage_etl.invoicing.meter_view import plan_for, plan_meters
from usage_etl.invoicing.price_book import PriceBook
from usage_etl.invoicing.run import period_lines
from usage_etl.invoicing.store import (
    credits_consumed,
    finalizations,
    meter_totals,
    published_days,
    read_lines,
)
from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse

BILL_LINE_COLUMNS = (
    "kind", "corrected_period_start", "meter", "reference", "tier", "quantity", "unit",
    "unit_price", "amount",
)  # fmt: skip


@dataclass(frozen=True)
class Projection:
    days_published: int
    period_days: int
    factor: Fraction  # period_days / days_published
    quantities: dict[str, tuple[Fraction, Fraction, str]]  # meter -> (to date, projected, unit)
    lines: list[dict]

    @property
    def total(self) -> Decimal:
        return sum((line["amount"] for line in self.lines), Decimal(0))


@dataclass
class Bill:
    account_id: str
    period: Period
    plan: str
    currency: str
    status: str  # open (computed now) | draft (stored, not final) | final
    lines: list[dict]
    previous: dict | None = None
    projection: Projection | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def to_date(self) -> Decimal:
        return sum((line["amount"] for line in self.lines), Decimal(0))


def _row(line: InvoiceLine) -> dict:
    return {column: getattr(line, column) for column in BILL_LINE_COLUMNS}


def previous_final(warehouse: Warehouse, account_id: str, period: Period) -> dict | None:
    rows = warehouse.query_dicts(
        f"""
        SELECT invoice_id, period_start, subtotal, currency, status, finalized_at
        FROM {warehouse.table("invoices")}
        WHERE account_id = {{account:String}} AND period_start < {{p:Date}} AND status = 'final'
        ORDER BY period_start DESC LIMIT 1
        """,
        {"account": account_id, "p": period.start},
    )
    return rows[0] if rows else None


def account_bill(warehouse: Warehouse, book: PriceBook, account_id: str, period: Period) -> Bill:
    finals = finalizations(warehouse)
    previous = previous_final(warehouse, account_id, period)
    if period in finals:
        stored = read_lines(warehouse, period, account_id)
        own = finals[period].book
        plan = stored[0]["plan"] if stored else plan_for(own, account_id, period)
        lines = [{c: r[c] for c in BILL_LINE_COLUMNS} for r in stored]
        return Bill(account_id, period, plan, own.currency, "final", lines, previous)
    computed = [
        line for line in period_lines(warehouse, book, period, finals)
        if line.account_id == account_id
    ]  # fmt: skip
    bill = Bill(
        account_id, period, plan_for(book, account_id, period), book.currency, "open",
        [_row(line) for line in computed], previous,
    )  # fmt: skip
    days = len(published_days(warehouse, period))
    if days:
        adjustments = [
            line for line in computed
            if line.kind == ADJUSTMENT or (line.kind == MINIMUM and line.corrected_period_start)
        ]  # fmt: skip
        bill.projection = project(warehouse, book, account_id, period, days, adjustments)
    else:
        bill.notes.append(f"no day of {period} is published yet: nothing to project from")
    return bill


def project(
    warehouse: Warehouse,
    book: PriceBook,
    account_id: str,
    period: Period,
    days_published: int,
    adjustments: list[InvoiceLine],
) -> Projection:
    """The period-end invoice if every meter kept its average per published day."""
    period_days = len(period.days)
    factor = Fraction(period_days, days_published)
    plan = plan_for(book, account_id, period)
    totals = meter_totals(warehouse, period, book).get(account_id, {})
    usage: list[InvoiceLine] = []
    quantities = {}
    for name, pricing in plan_meters(book, plan).items():
        now = pricing.definition.quantity(totals.get(name, 0))
        projected = now * factor
        quantities[name] = (now, projected, pricing.definition.unit)
        for charge in pricing.charges(projected):
            usage.append(
                to_line(
                    Charge(account_id, plan, name, charge.tier, charge.stored_quantity,
                           pricing.definition.unit, charge.unit_price, charge.amount),
                    period, USAGE, book.version, book.currency,
                )
            )  # fmt: skip
    lines = usage + adjustments + fee_lines(period, book, [account_id], usage)
    lines = [line for line in lines if line.account_id == account_id]
    grants = {grant.id for grant in book.credits}
    consumed = credits_consumed(warehouse, period, grants) if grants else {}
    lines += credit_lines(period, book, lines, consumed)
    ordered = sorted(lines, key=InvoiceLine.sort_key)
    return Projection(days_published, period_days, factor, quantities, [_row(x) for x in ordered])


def open_period(as_of: date) -> Period:
    return Period.containing(as_of)
