"""Invariants of a published period, as plain functions (the Dagster checks wrap them).

Conservation, exactly: for a period P, each account and meter, the sum of the quantities of
P's usage lines plus every adjustment line correcting P (draft or final, on any later invoice)
equals Σ over tiers of ROUND_HALF_UP(exact tier quantity, 9), the tiers being P's usage in
usage_daily split with P's price book. Each tier rounds by at most 0.5e-9, so the billed sum
is also within (number of tiers) × 0.5e-9 of the exact meter quantity. The meter quantity is
the book's own: multiplier × the `where`-filtered usage / unit (price book v2).

Subtotals include every kind of line (credits too). Credits: across all periods a grant's
credit lines never consume more than its amount. Overlapping meters (WARN): two meters of a
plan that can count the same usage row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from usage_etl.invoicing.lines import price_usage
from usage_etl.invoicing.price_book import PriceBook
from usage_etl.invoicing.store import (
    LINES,
    credits_consumed_all,
    finalizations,
    meter_totals,
    period_book,
    stored_checksum,
)
from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse

MAX_LISTED = 20


@dataclass
class CheckOutcome:
    passed: bool
    summary: str
    action: str = ""
    details: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        shown = self.details[:MAX_LISTED]
        more = len(self.details) - len(shown)
        meta = {"summary": self.summary, "problems": len(self.details)}
        if self.action:
            meta["what_to_do"] = self.action
        if shown:
            meta["examples"] = "\n".join(shown + ([f"… and {more} more"] if more else []))
        return meta


def conservation(warehouse: Warehouse, period: Period) -> CheckOutcome:
    finals = finalizations(warehouse)
    book = period_book(warehouse, period, finals)
    if book is None:
        return CheckOutcome(True, f"{period} has not been invoiced yet: nothing to conserve")
    expected: dict[tuple[str, str], Decimal] = {}
    for charge in price_usage(meter_totals(warehouse, period, book), book, period.start):
        key = (charge.account_id, charge.meter)
        expected[key] = expected.get(key, Decimal(0)) + charge.quantity
    billed = {
        (account, meter): qty
        for account, meter, qty in warehouse.query_rows(
            f"""
            SELECT account_id, meter, sum(quantity) FROM {warehouse.table(LINES)}
            WHERE (kind = 'usage' AND period_start = {{p:Date}})
               OR (kind = 'adjustment' AND corrected_period_start = {{p:Date}})
            GROUP BY account_id, meter
            """,
            {"p": period.start},
        )
    }
    problems = [
        f"{account} {meter}: usage {expected.get((account, meter), 0)} billed "
        f"{billed.get((account, meter), 0)}"
        for account, meter in sorted(expected.keys() | billed.keys())
        if expected.get((account, meter), 0) != billed.get((account, meter), 0)
    ]
    if not problems:
        return CheckOutcome(True, f"{len(expected)} account meters of {period} billed exactly")
    action = (
        f"usage of final period {period} changed after it was billed: materialize "
        f"monthly_invoices for {max(finals).next()} to bill the difference as adjustments"
        if period in finals
        else f"usage of {period} changed during the run: re-materialize monthly_invoices "
        f"for {period}"
    )
    return CheckOutcome(False, f"{len(problems)} account meters differ", action, problems)


def subtotals(warehouse: Warehouse, period: Period) -> CheckOutcome:
    rows = warehouse.query_rows(
        f"""
        SELECT i.invoice_id, i.subtotal, l.total, l.lines
        FROM {warehouse.table("invoices")} AS i
        FULL OUTER JOIN
        (
            SELECT invoice_id, sum(amount) AS total, count() AS lines
            FROM {warehouse.table(LINES)} WHERE period_start = {{p:Date}} GROUP BY invoice_id
        ) AS l ON i.invoice_id = l.invoice_id
        WHERE i.period_start = {{p:Date}} OR l.lines > 0
        """,
        {"p": period.start},
        join_use_nulls=1,
    )
    problems = [
        f"{invoice or '?'}: subtotal {subtotal} vs lines {total} ({lines} lines)"
        for invoice, subtotal, total, lines in rows
        if subtotal is None or total is None or subtotal != total
    ]
    if not problems:
        return CheckOutcome(True, f"{len(rows)} invoices of {period} equal the sum of their lines")
    return CheckOutcome(
        False,
        f"{len(problems)} invoices disagree with their lines",
        "the invoices view or the lines table was altered by hand: restore the view from "
        "sql/004_invoices.sql and re-materialize monthly_invoices for this period",
        problems,
    )


def usage_amounts(warehouse: Warehouse, period: Period) -> CheckOutcome:
    rows = warehouse.query_rows(
        f"""
        SELECT account_id, meter, tier, quantity, amount FROM {warehouse.table(LINES)}
        WHERE period_start = {{p:Date}} AND kind = 'usage'
          AND (amount < 0 OR quantity <= 0 OR unit_price < 0)
        ORDER BY account_id, meter, tier
        """,
        {"p": period.start},
    )
    problems = [f"{a} {m} tier {t}: quantity {q} amount {amt}" for a, m, t, q, amt in rows]
    if not problems:
        return CheckOutcome(True, f"every usage line of {period} is positive")
    return CheckOutcome(
        False,
        f"{len(problems)} usage lines are negative or empty",
        "usage lines can only be positive: check the price book for negative prices and "
        "re-materialize monthly_invoices for this period; do not bill it until this passes",
        problems,
    )


def final_unchanged(warehouse: Warehouse, period: Period) -> CheckOutcome:
    final = finalizations(warehouse).get(period)
    if final is None:
        return CheckOutcome(True, f"{period} is draft: nothing finalized to compare")
    checksum, count = stored_checksum(warehouse, period)
    if checksum == final.lines_checksum:
        return CheckOutcome(True, f"{count} final lines identical to their finalization")
    return CheckOutcome(
        False,
        f"final lines of {period} changed since finalization ({final.line_count} lines then, "
        f"{count} now)",
        "the billed invoices no longer match what finance received: stop billing from this "
        "period, compare with the finalization export in S3 and restore the lines from it",
        [f"recorded {final.lines_checksum}", f"now      {checksum}"],
    )


def credits_within_grants(warehouse: Warehouse, period: Period) -> CheckOutcome:
    """§3.1: across all periods, the credit lines of a grant never consume more than its
    amount, and every credit line of the period names a grant of the period's price book."""
    book = period_book(warehouse, period)
    references = {
        r[0]
        for r in warehouse.query_rows(
            f"""
            SELECT DISTINCT reference FROM {warehouse.table(LINES)}
            WHERE period_start = {{p:Date}} AND kind = 'credit'
            """,
            {"p": period.start},
        )
    }
    if not references:
        return CheckOutcome(True, f"no credit lines in {period}")
    grants = {g.id: g for g in book.credits} if book else {}
    consumed = credits_consumed_all(warehouse)
    problems = []
    for reference in sorted(references):
        grant = grants.get(reference)
        if grant is None:
            problems.append(f"{reference}: credit lines name a grant the price book lacks")
        elif consumed.get(reference, Decimal(0)) > grant.amount:
            problems.append(
                f"{reference}: consumed {consumed[reference]} of a {grant.amount} grant"
            )
        elif consumed.get(reference, Decimal(0)) < 0:
            problems.append(f"{reference}: credit lines add {-consumed[reference]} to invoices")
    if not problems:
        return CheckOutcome(True, f"{len(references)} grants of {period} within their amounts")
    return CheckOutcome(
        False,
        f"{len(problems)} grants over-consumed",
        "credits exceed what was granted: re-materialize monthly_invoices for the draft "
        "periods in order (earliest first) so each consumes only the remaining balance; if a "
        "final period is involved, correct the grant by hand with finance",
        problems,
    )


def overlapping_meters(book: PriceBook) -> list[str]:
    """Pairs of meters billed by one plan that can count the same usage row twice: same
    measure, and for every column their conditions admit a common value. `direction` and
    `network_path` have known value sets, so {not: [...]} on them is exact."""
    found = []
    for name in book.plans:
        meters = book.billed_meters(name)
        for index, first in enumerate(meters):
            for second in meters[index + 1 :]:
                a, b = book.meter_definition(first), book.meter_definition(second)
                if a.measure == b.measure and _can_meet(a.where, b.where):
                    found.append(f"plans.{name}: meters {first} and {second} overlap")
    return found


KNOWN_VALUES = {
    "direction": frozenset({"ingress", "egress"}),
    "network_path": frozenset({"public_internet", "private_network", "unknown"}),
}


def _can_meet(first: dict, second: dict) -> bool:
    for key in first.keys() | second.keys():
        a, b = first.get(key), second.get(key)
        if a is None or b is None:
            continue
        domain = KNOWN_VALUES.get(key)
        if domain is not None:
            allowed_a = domain - set(a.values) if a.negate else set(a.values)
            allowed_b = domain - set(b.values) if b.negate else set(b.values)
            if not allowed_a & allowed_b:
                return False
        elif not a.negate and not b.negate:
            if not set(a.values) & set(b.values):
                return False
        elif a.negate != b.negate:
            positive, negative = (b, a) if a.negate else (a, b)
            if set(positive.values) <= set(negative.values):
                return False
    return True


def meter_overlaps(warehouse: Warehouse, period: Period) -> CheckOutcome:
    """WARN: meters of one plan that can count the same row (in the period's price book)."""
    book = period_book(warehouse, period)
    if book is None:
        return CheckOutcome(True, f"{period} has not been invoiced yet")
    overlaps = overlapping_meters(book)
    if not overlaps:
        return CheckOutcome(True, "no plan bills the same usage row in two meters")
    return CheckOutcome(
        False,
        f"{len(overlaps)} pairs of meters of one plan can count the same usage",
        "a usage row may be billed twice: if that is not intended, make the meters' `where` "
        "conditions disjoint in the price book (usage-etl price-book check lists them)",
        overlaps,
    )
