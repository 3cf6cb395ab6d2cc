"""Pure parts of the money view: exact decimal text, and the usage statement's rounding rule
on a case where rounding each row, or the meter's total, would not match the lines."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

from usage_etl.invoicing.exact import exact_text
from usage_etl.invoicing.meter_view import Condition, MeterDefinition, MeterPricing
from usage_etl.invoicing.price_book import Tier
from usage_etl.invoicing.statement import _meter_rows

NANO = Decimal("1E-9")


def test_exact_text_prints_terminating_decimals_in_full():
    assert exact_text(Fraction(1, 2**30)) == "0.000000000931322574615478515625"
    assert exact_text(Fraction(3758096384, 2**30)) == "3.5"
    assert exact_text(Fraction(30, 7)) == "30/7"
    assert exact_text(Decimal("0.500")) == "0.5" and exact_text(0) == "0"
    assert exact_text(Fraction(-1, 4)) == "-0.25"


def test_statement_rows_add_up_to_the_tier_rounded_lines():
    # Each request counts 0.4 nano-units; tier 1 up to 0.5 nano-units, tier 2 beyond.
    meter = MeterDefinition("calls", "request_count", "unit", (), Decimal("0.0000000004"))
    tiers = (Tier(up_to="0.0000000005", unit_price="0"), Tier(up_to=None, unit_price="1"))
    pricing = MeterPricing(meter, tiers)
    line = {"invoice_id": "inv", "account_id": "a", "plan": "p",
            "period_start": date(2026, 10, 1), "price_book_version": "v"}  # fmt: skip
    cells = [
        (date(2026, 10, d), {"project_id": "x", "direction": "egress"}, 0, 1) for d in (1, 2, 3)
    ]
    rows = _meter_rows(line, pricing, cells)
    # Exact total 1.2 nano: tier 1 holds 0.5 (stored 1 nano), tier 2 0.7 (stored 1 nano), so the
    # lines store 2 nano. Rounding each row (0.4 -> 0) gives 0; rounding the total gives 1.
    # The rule: S(0.4) = 0, S(0.8) = 1 (0.5 -> 1, 0.3 -> 0), S(1.2) = 2 (0.5 -> 1, 0.7 -> 1).
    assert [r["quantity"] for r in rows] == [0 * NANO, 1 * NANO, 1 * NANO]
    assert [r["quantity_exact"] for r in rows] == ["0.0000000004"] * 3
    assert [r["measure_total"] for r in rows] == [1, 1, 1]
    stored = sum((c.stored_quantity for c in pricing.charges(Fraction(12, 10**10))), Decimal(0))
    assert stored == 2 * NANO == sum(r["quantity"] for r in rows)


def test_meter_where_conditions():
    meter = MeterDefinition("m", "bytes", "GiB", (
        Condition("direction", ("egress",)),
        Condition("network_path", ("private_network",), negated=True),
    ))  # fmt: skip
    assert meter.matches({"direction": "egress", "network_path": "unknown"})
    assert not meter.matches({"direction": "egress", "network_path": "private_network"})
    assert not meter.matches({"direction": "ingress", "network_path": "unknown"})
    assert meter.quantity(2**29) == Fraction(1, 2)
