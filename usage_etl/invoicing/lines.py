"""Invoice lines (contract §5) from meter totals and a price book: pure, exact, deterministic.

`price_usage` turns one period's raw meter totals into per-(account, meter, tier) charges;
usage lines are those charges on the period's invoices, and adjustment lines are the
difference between a final period's charges recomputed now and what was billed for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

from usage_etl.invoicing.ids import invoice_id, line_id
from usage_etl.invoicing.periods import Period
from usage_etl.pricing import METERS, PriceBook, price_meter

USAGE = "usage"
ADJUSTMENT = "adjustment"
DRAFT = "draft"
FINAL = "final"

LINE_COLUMNS = (
    "invoice_id", "line_id", "account_id", "plan", "period_start", "period_end", "kind",
    "corrected_period_start", "meter", "tier", "quantity", "unit", "unit_price", "amount",
    "currency", "status", "price_book_version", "computed_at",
)  # fmt: skip

# account_id -> meter -> raw total (bytes or requests)
MeterTotals = dict[str, dict[str, int]]
ChargeKey = tuple[str, str, int]  # (account_id, meter, tier)


@dataclass(frozen=True)
class Charge:
    """What one tier of one meter bills one account, rounded as stored."""

    account_id: str
    plan: str
    meter: str
    tier: int
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal

    @property
    def key(self) -> ChargeKey:
        return (self.account_id, self.meter, self.tier)


@dataclass(frozen=True)
class InvoiceLine:
    invoice_id: str
    line_id: str
    account_id: str
    plan: str
    period_start: date
    period_end: date
    kind: str
    corrected_period_start: date | None
    meter: str
    tier: int
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    currency: str
    status: str
    price_book_version: str
    computed_at: datetime | None = None

    def row(self) -> list:
        return [getattr(self, column) for column in LINE_COLUMNS]

    def sort_key(self) -> tuple:
        corrected = self.corrected_period_start or date.min
        kind = 0 if self.kind == USAGE else 1
        return (self.account_id, kind, corrected, METERS.index(self.meter), self.tier)


def price_usage(totals: MeterTotals, book: PriceBook) -> list[Charge]:
    """Every (account, meter, tier) with a positive exact quantity, in a stable order."""
    charges = []
    for account in sorted(totals):
        plan = book.plan_for(account)
        for meter in METERS:
            price = book.meter_price(plan, meter)
            for tier in price_meter(totals[account].get(meter, 0), price):
                charges.append(
                    Charge(
                        account_id=account,
                        plan=plan,
                        meter=meter,
                        tier=tier.tier,
                        quantity=tier.stored_quantity,
                        unit=price.unit,
                        unit_price=tier.unit_price,
                        amount=tier.amount,
                    )
                )
    return charges


def to_line(
    charge: Charge,
    period: Period,
    kind: str,
    book_version: str,
    currency: str,
    corrected: Period | None = None,
) -> InvoiceLine:
    invoice = invoice_id(charge.account_id, period.start)
    corrected_start = corrected.start if corrected else None
    return InvoiceLine(
        invoice_id=invoice,
        line_id=line_id(invoice, kind, charge.meter, charge.tier, corrected_start),
        account_id=charge.account_id,
        plan=charge.plan,
        period_start=period.start,
        period_end=period.end,
        kind=kind,
        corrected_period_start=corrected_start,
        meter=charge.meter,
        tier=charge.tier,
        quantity=charge.quantity,
        unit=charge.unit,
        unit_price=charge.unit_price,
        amount=charge.amount,
        currency=currency,
        status=DRAFT,
        price_book_version=book_version,
    )


def usage_lines(period: Period, totals: MeterTotals, book: PriceBook) -> list[InvoiceLine]:
    return [
        to_line(c, period, USAGE, book.version, book.currency) for c in price_usage(totals, book)
    ]


def adjustment_charges(recomputed: list[Charge], billed: dict[ChargeKey, Charge]) -> list[Charge]:
    """Per (account, meter, tier): recomputed − billed, when quantity or amount differs.

    A tier that was billed but has no usage any more is reversed in full; prices and units
    come from the recomputation (the corrected period's own price book), else from the bill.
    """
    now = {c.key: c for c in recomputed}
    differences = []
    for key in sorted(now.keys() | billed.keys(), key=_charge_order):
        new, old = now.get(key), billed.get(key)
        base = new or old
        quantity = (new.quantity if new else Decimal(0)) - (old.quantity if old else Decimal(0))
        amount = (new.amount if new else Decimal(0)) - (old.amount if old else Decimal(0))
        if quantity or amount:
            differences.append(replace(base, quantity=quantity, amount=amount))
    return differences


def _charge_order(key: ChargeKey) -> tuple:
    account, meter, tier = key
    return (account, METERS.index(meter), tier)


def with_status(lines: list[InvoiceLine], status: str, computed_at: datetime):
    return sorted(
        (replace(line, status=status, computed_at=computed_at) for line in lines),
        key=InvoiceLine.sort_key,
    )
