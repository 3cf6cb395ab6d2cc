"""Price book validation and exact tier math, on hand-computable cases (contract §3)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
import yaml

from usage_etl.invoicing.ids import invoice_id, line_id
from usage_etl.invoicing.lines import adjustment_charges, price_usage
from usage_etl.invoicing.price_book import (
    PriceBookError,
    load_price_book,
    parse_price_book,
    price_book_from_json,
    round_half_up,
    split_tiers,
)
from usage_etl.periods import Period
from usage_etl.settings import SAMPLE_PRICE_BOOK

GIB = 2**30
BOOK_DATA = yaml.safe_load(SAMPLE_PRICE_BOOK.read_text())


@pytest.fixture
def book():
    return load_price_book(SAMPLE_PRICE_BOOK)


def charges_of(book, account, **meters):
    return {(c.meter, c.tier): (c.quantity, c.amount) for c in price_usage({account: meters}, book)}


# -- tiers ------------------------------------------------------------------------------------


def test_tier_boundary_hit_exactly_bills_only_the_lower_tier(book):
    # free egress: first 10 GiB at 0, the rest at 0.09. Exactly 10 GiB never reaches tier 2.
    assert charges_of(book, "beta", egress_bytes=10 * GIB) == {
        ("egress_bytes", 1): (Decimal(10), Decimal(0))
    }
    # One byte more: tier 2 bills 1/2^30 GiB = 0.00000000093… -> 0.000000001, amount 0.00.
    assert charges_of(book, "beta", egress_bytes=10 * GIB + 1)[("egress_bytes", 2)] == (
        Decimal("0.000000001"),
        Decimal("0.00"),
    )


def test_graduated_tiers_on_the_pro_plan(book):
    # acme is on pro: 100 GiB at 0.05, up to 1000 GiB at 0.04, above at 0.03.
    assert charges_of(book, "acme", egress_bytes=1000 * GIB) == {
        ("egress_bytes", 1): (Decimal(100), Decimal("5.00")),
        ("egress_bytes", 2): (Decimal(900), Decimal("36.00")),
    }
    assert charges_of(book, "acme", egress_bytes=1500 * GIB)[("egress_bytes", 3)] == (
        Decimal(500),
        Decimal("15.00"),
    )


def test_plan_override_prices_the_same_usage_differently(book):
    free = charges_of(book, "beta", egress_bytes=200 * GIB, requests=150_000)
    pro = charges_of(book, "acme", egress_bytes=200 * GIB, requests=150_000)
    # free: 10 GiB free, 190 GiB * 0.09 = 17.10; 100k requests free, 50k * 0.004/1k = 0.20
    assert free == {
        ("egress_bytes", 1): (Decimal(10), Decimal(0)),
        ("egress_bytes", 2): (Decimal(190), Decimal("17.10")),
        ("requests", 1): (Decimal(100), Decimal(0)),
        ("requests", 2): (Decimal(50), Decimal("0.20")),
    }
    # pro: 100 GiB * 0.05 + 100 GiB * 0.04; all 150k requests inside the free 1000k
    assert pro == {
        ("egress_bytes", 1): (Decimal(100), Decimal("5.00")),
        ("egress_bytes", 2): (Decimal(100), Decimal("4.00")),
        ("requests", 1): (Decimal(150), Decimal(0)),
    }
    assert {c.plan for c in price_usage({"acme": {"egress_bytes": 1}}, book)} == {"pro"}


def test_zero_usage_has_no_lines(book):
    assert price_usage({"beta": {"egress_bytes": 0, "ingress_bytes": 0, "requests": 0}}, book) == []
    assert price_usage({}, book) == []


def one_tier_book(unit_price: str):
    data = copy.deepcopy(BOOK_DATA)
    for meter in ("egress_bytes", "requests"):
        data["plans"]["free"][meter]["tiers"] = [{"up_to": None, "unit_price": unit_price}]
    return parse_price_book(data)


@pytest.mark.parametrize(
    ("requests", "amount"),
    [(500, "0.01"), (1500, "0.02"), (2500, "0.03"), (499, "0.00")],
)
def test_amount_ties_round_half_up(requests, amount):
    # 0.5k * 0.01 = 0.005 -> 0.01 (banker's rounding would give 0.00); 2.5k -> 0.025 -> 0.03
    charges = price_usage({"beta": {"requests": requests}}, one_tier_book("0.01"))
    assert [c.amount for c in charges] == [Decimal(amount)]


def test_quantity_tie_at_the_ninth_decimal_rounds_half_up():
    # 2^20 bytes = 1/1024 GiB = 0.0009765625 exactly -> 0.000976563 (half up, not to even)
    charges = price_usage({"beta": {"egress_bytes": 2**20}}, one_tier_book("1"))
    assert [c.quantity for c in charges] == [Decimal("0.000976563")]


def test_amount_is_computed_from_the_exact_quantity_not_the_rounded_one():
    # 1 byte at 5,000,000 per GiB: exact 5e6 / 2^30 = 0.0046566… -> 0.00, whereas the stored
    # quantity 0.000000001 * 5e6 would give 0.005 -> 0.01.
    (charge,) = price_usage({"beta": {"egress_bytes": 1}}, one_tier_book("5000000"))
    assert (charge.quantity, charge.amount) == (Decimal("0.000000001"), Decimal("0.00"))


def test_split_tiers_sums_to_the_quantity(book):
    tiers = book.meter_price("pro", "egress_bytes").tiers
    for quantity in (
        Fraction(0),
        Fraction(1, 3),
        Fraction(100),
        Fraction(2500, 7),
        Fraction(10**6),
    ):
        assert sum(c.quantity for c in split_tiers(quantity, tiers)) == quantity


def test_round_half_up_is_symmetric_for_negative_values():
    assert round_half_up(Fraction(-5, 1000), 2) == Decimal("-0.01")
    assert round_half_up(Fraction(5, 1000), 2) == Decimal("0.01")
    assert round_half_up(Fraction(-4, 1000), 2) == Decimal("0.00")


def test_adjustment_is_the_difference_per_tier(book):
    billed = {c.key: c for c in price_usage({"beta": {"egress_bytes": 20 * GIB}}, book)}
    now = price_usage({"beta": {"egress_bytes": 30 * GIB}}, book)
    (diff,) = adjustment_charges(now, billed)  # tier 1 (10 GiB at 0) did not change
    assert (diff.tier, diff.quantity, diff.amount) == (2, Decimal(10), Decimal("0.90"))
    # Usage that disappears is reversed in full, with a negative quantity and amount.
    reversal = adjustment_charges([], billed)
    assert [(c.tier, c.quantity, c.amount) for c in reversal] == [
        (1, Decimal(-10), Decimal(0)),
        (2, Decimal(-10), Decimal("-0.90")),
    ]


# -- periods and ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "end", "days"),
    [
        ("2026-02", date(2026, 3, 1), 28),
        ("2026-04", date(2026, 5, 1), 30),
        ("2026-10", date(2026, 11, 1), 31),
        ("2028-02", date(2028, 3, 1), 29),  # leap year
        ("2026-12", date(2027, 1, 1), 31),
    ],
)
def test_period_bounds(label, end, days):
    period = Period.parse(label)
    assert (period.end, len(period.days)) == (end, days)
    assert period.days[-1] < period.end and period.days[0] == period.start
    assert Period.parse(f"{label}-01") == period
    assert period.next().start == end and period.next().previous() == period


def test_final_due_at_period_end_plus_grace():
    period = Period.parse("2028-02")
    due = datetime(2028, 3, 4, tzinfo=UTC)
    assert period.final_due_at(3) == due
    assert period.is_final_due(due, 3)
    assert not period.is_final_due(datetime(2028, 3, 3, 23, 59, 59, 999999, tzinfo=UTC), 3)


def test_ids_are_deterministic_and_never_collide_through_separators():
    start = date(2026, 10, 1)
    assert invoice_id("acme", start) == invoice_id("acme", start)
    ids = {invoice_id(a, start) for a in ("a|b", "a", "a\x00b", 'a"b', "é", "e\u0301")}
    assert len(ids) == 6
    inv = invoice_id("acme", start)
    lines = {
        line_id(inv, "usage", "requests", 1, None),
        line_id(inv, "adjustment", "requests", 1, None),
        line_id(inv, "adjustment", "requests", 1, date(2026, 9, 1)),
        line_id(inv, "adjustment", "requests", 11, None),
    }
    assert len(lines) == 4


# -- validation -------------------------------------------------------------------------------


def mutate(change):
    data = copy.deepcopy(BOOK_DATA)
    change(data)
    return data


def set_in(path, value):
    def change(data):
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            set_in(["plans", "free", "egress_bytes", "tiers", 1, "unit_price"], 0.09),
            "plans.free.egress_bytes.tiers.1.unit_price",
            "decimal string",
        ),
        (
            set_in(["plans", "free", "requests", "tiers", 0, "unit_price"], "-1"),
            "plans.free.requests.tiers.0.unit_price",
            "negative",
        ),
        (
            set_in(["plans", "free", "requests", "tiers", 0, "unit_price"], "0.0000001"),
            "plans.free.requests.tiers.0.unit_price",
            "6 decimals",
        ),
        (
            set_in(["plans", "pro", "egress_bytes", "tiers", 1, "up_to"], 100),
            "plans.pro.egress_bytes.tiers",
            "strictly increasing",
        ),
        (
            set_in(["plans", "free", "egress_bytes", "tiers", 1, "up_to"], 20),
            "plans.free.egress_bytes.tiers",
            "unbounded",
        ),
        (set_in(["plans", "free", "requests", "unit"], "TB"), "plans.free.requests.unit", "TB"),
        (
            set_in(["plans", "free", "requests", "unit"], "GiB"),
            "plans.free.requests.unit",
            "does not measure",
        ),
        (
            set_in(
                ["plans", "free", "egress"],
                {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "1"}]},
            ),
            "plans.free.egress",
            "unknown meter",
        ),
        (lambda d: d["plans"]["free"].pop("requests"), "plans.free", "requests is missing"),
        (set_in(["accounts", "globex"], "gold"), "accounts.globex", "unknown plan 'gold'"),
        (set_in(["default_plan"], "basic"), "default_plan", "unknown plan 'basic'"),
        (lambda d: d.pop("default_plan"), "default_plan", "Field required"),
        (
            set_in(
                ["plans", "free", "requests", "tiers"],
                [{"up_to": i, "unit_price": "1"} for i in range(1, 256)]
                + [{"up_to": None, "unit_price": "1"}],
            ),
            "plans.free.requests.tiers",
            "1 to 255 tiers",
        ),
        (set_in(["currency"], "usd"), "currency", "ISO 4217"),
        (set_in(["grace_days"], -1), "grace_days", ">= 0"),
        (set_in(["surprise"], 1), "surprise", "Extra inputs"),
    ],
)
def test_bad_price_book_is_rejected_naming_the_field(change, field, words):
    with pytest.raises(PriceBookError) as error:
        parse_price_book(mutate(change), "book.yaml")
    message = str(error.value)
    assert f"{field}:" in message and words in message and "book.yaml" in message


def test_unreadable_and_malformed_files_fail_clearly(tmp_path):
    with pytest.raises(PriceBookError, match="cannot read"):
        load_price_book(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("plans: [\n")
    with pytest.raises(PriceBookError, match="not valid YAML"):
        load_price_book(bad)


def test_sample_book_keeps_the_contract_plans_and_round_trips(book):
    assert book.default_plan == "free" and book.plan_for("acme") == "pro"
    assert book.plan_for("anyone") == "free"
    assert book.meter_price("free", "egress_bytes").tiers[1].unit_price == Decimal("0.09")
    assert price_book_from_json(book.canonical_json()) == book
