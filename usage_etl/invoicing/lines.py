"""Invoice lines (contract §5) from meter totals and a price book: pure, exact, deterministic.

`price_usage` turns one period's raw meter totals into per-(account, meter, tier) charges;
usage lines are those charges on the period's invoices, and adjustment lines are the
difference between a final period's charges recomputed now and what was billed for it.

Price book v2 (§3.1) adds lines without a meter (quantity 1, unit `period`, tier 0, meter '',
unit_price = amount): `fixed` (the plan's fixed fee, on every invoice of the plan), `minimum`
(the commitment true-up max(0, minimum - (usage lines + fixed fee)) of the invoice's own
period, or, with corrected_period_start set, the change of a final period's true-up) and
`credit` (negative, reference = the grant id). What callers use:

- `usage_lines(period, totals, book)`: the usage lines of a period.
- `fee_lines(period, book, accounts, usage)`: fixed and minimum lines of the period's invoices.
- `credit_lines(period, book, lines, consumed)`: credit lines given the other lines of the
  period and what earlier periods consumed of each grant (`store.credits_consumed`).
- `invoice_total(lines)`: per account, the sum of amounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

from usage_etl.invoicing.ids import invoice_id, line_id
from usage_etl.invoicing.price_book import METERS, PriceBook, price_meter
from usage_etl.periods import Period

USAGE = "usage"
ADJUSTMENT = "adjustment"
FIXED = "fixed"
MINIMUM = "minimum"
CREDIT = "credit"
KINDS = (USAGE, FIXED, MINIMUM, ADJUSTMENT, CREDIT)  # line order within an invoice
PERIOD_UNIT = "period"  # unit of fixed, minimum and credit lines (quantity 1)
DRAFT = "draft"
FINAL = "final"

LINE_COLUMNS = (
    "invoice_id", "line_id", "account_id", "plan", "period_start", "period_end", "kind",
    "corrected_period_start", "meter", "reference", "tier", "quantity", "unit", "unit_price",
    "amount", "currency", "status", "price_book_version", "computed_at",
)  # fmt: skip

# account_id -> meter -> raw total (bytes or requests, before the meter's multiplier)
MeterTotals = dict[str, dict[str, int]]
ChargeKey = tuple[str, str, int]  # (account_id, meter, tier)


def meter_rank(meter: str) -> tuple[int, str]:
    """Line order of meters: the predefined ones in contract order, then by name."""
    return (METERS.index(meter), "") if meter in METERS else (len(METERS), meter)


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
    reference: str = ""

    def row(self) -> list:
        return [getattr(self, column) for column in LINE_COLUMNS]

    def sort_key(self) -> tuple:
        corrected = self.corrected_period_start or date.min
        kind = KINDS.index(self.kind) if self.kind in KINDS else len(KINDS)
        if self.kind == MINIMUM and self.corrected_period_start:
            kind = KINDS.index(ADJUSTMENT)  # a true-up correction sits with the adjustments
        return (self.account_id, kind, corrected, meter_rank(self.meter), self.tier, self.reference)


def price_usage(
    totals: MeterTotals, book: PriceBook, period_start: date | None = None
) -> list[Charge]:
    """Every (account, meter, tier) with a positive exact quantity, in a stable order. Each
    account is priced under its plan for the period starting `period_start`."""
    charges = []
    for account in sorted(totals):
        plan = book.plan_for(account, period_start)
        for meter in book.billed_meters(plan):
            price = book.meter_price(plan, meter)
            multiplier = book.meter_definition(meter).multiplier
            for tier in price_meter(totals[account].get(meter, 0), price, multiplier):
                charges.append(
                    Charge(
                        account_id=account,
                        plan=plan,
                        meter=meter,
                        tier=tier.tier,
                        quantity=tier.stored_quantity,
                        unit=str(price.unit),
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


def period_line(
    account: str,
    plan: str,
    period: Period,
    kind: str,
    amount: Decimal,
    book: PriceBook,
    corrected: Period | None = None,
    reference: str = "",
) -> InvoiceLine:
    """A fixed, minimum or credit line: quantity 1, unit `period`, tier 0, meter ''."""
    invoice = invoice_id(account, period.start)
    corrected_start = corrected.start if corrected else None
    return InvoiceLine(
        invoice_id=invoice,
        line_id=line_id(invoice, kind, "", 0, corrected_start, reference),
        account_id=account,
        plan=plan,
        period_start=period.start,
        period_end=period.end,
        kind=kind,
        corrected_period_start=corrected_start,
        meter="",
        tier=0,
        quantity=Decimal(1),
        unit=PERIOD_UNIT,
        unit_price=amount,
        amount=amount,
        currency=book.currency,
        status=DRAFT,
        price_book_version=book.version,
        reference=reference,
    )


def usage_lines(period: Period, totals: MeterTotals, book: PriceBook) -> list[InvoiceLine]:
    return [
        to_line(c, period, USAGE, book.version, book.currency)
        for c in price_usage(totals, book, period.start)
    ]


def true_up(minimum: Decimal | None, usage_and_fixed: Decimal) -> Decimal:
    """§3.1: max(0, minimum - (the period's own usage lines + fixed fee)); 0 without one."""
    if minimum is None:
        return Decimal(0)
    return max(Decimal(0), minimum - usage_and_fixed)


def fee_lines(
    period: Period, book: PriceBook, accounts: Iterable[str], usage: list[InvoiceLine]
) -> list[InvoiceLine]:
    """Fixed-fee and minimum true-up lines of the period's invoices.

    An invoice exists for every account in `accounts` (those with usage or adjustment lines
    in the period), and for every account named in the book whose plan for the period has a
    fixed fee or a minimum. `usage` are the period's own usage lines (adjustments for earlier
    periods do not count towards this period's minimum).
    """
    own: dict[str, Decimal] = {}
    for line in usage:
        own[line.account_id] = own.get(line.account_id, Decimal(0)) + line.amount
    lines = []
    for account in sorted(set(accounts) | set(book.fee_accounts(period.start))):
        plan_name = book.plan_for(account, period.start)
        plan = book.plan(plan_name)
        fixed = plan.fixed_fee or Decimal(0)
        if fixed > 0:
            lines.append(period_line(account, plan_name, period, FIXED, fixed, book))
        amount = true_up(plan.minimum, own.get(account, Decimal(0)) + fixed)
        if amount > 0:
            lines.append(period_line(account, plan_name, period, MINIMUM, amount, book))
    return lines


def invoice_total(lines: Iterable[InvoiceLine]) -> dict[str, Decimal]:
    """Per account, the sum of the lines' amounts."""
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line.account_id] = totals.get(line.account_id, Decimal(0)) + line.amount
    return totals


def credit_lines(
    period: Period, book: PriceBook, lines: list[InvoiceLine], consumed: dict[str, Decimal]
) -> list[InvoiceLine]:
    """§3.1 credits: each invoice consumes its account's usable grants in order of earliest
    `until`, then id, each up to its remaining balance (amount - `consumed[grant id]`, what
    stored invoices of earlier periods consumed), until its total before credits reaches 0.
    """
    result = []
    for account, total in sorted(invoice_total(lines).items()):
        plan = book.plan_for(account, period.start)
        left = total
        for grant in book.grants_usable(account, period.start):
            if left <= 0:
                break
            remaining = grant.amount - consumed.get(grant.id, Decimal(0))
            take = min(remaining, left)
            if take <= 0:
                continue
            left -= take
            result.append(
                period_line(account, plan, period, CREDIT, -take, book, reference=grant.id)
            )
    return result


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
    return (account, meter_rank(meter), tier)


def with_status(lines: list[InvoiceLine], status: str, computed_at: datetime):
    return sorted(
        (replace(line, status=status, computed_at=computed_at) for line in lines),
        key=InvoiceLine.sort_key,
    )
