# ruff: noqa: E501  (the table of validation cases reads best one case per line)
"""Price book v2 (contract §3.1): validation paths, plan history, grants order, exact meter
quantities with multipliers and `unit: unit`, line ids with a reference. Expected values are
computed here by hand (Fractions, Decimal.quantize), never by the pricing code."""

from __future__ import annotations

import copy
import hashlib
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest
import yaml

from usage_etl.invoicing.ids import invoice_id, line_id
from usage_etl.invoicing.lines import price_usage
from usage_etl.invoicing.price_book import PriceBookError, parse_price_book, price_book_from_json

V2 = """
version: "v2"
currency: USD
grace_days: 3
default_plan: free
meters:
  runner_egress:
    measure: bytes
    unit: GiB
    where:
      direction: [egress]
      region: [runners-eu]
      network_path: {not: [private_network]}
    multiplier: "0.37"
  script_calls:
    measure: request_count
    unit: unit
    where: {project_id: [""]}
plans:
  free:
    requests: {unit: 1k, tiers: [{up_to: null, unit_price: "0.004"}]}
  pro:
    fixed_fee: "49.00"
    minimum: "100.00"
    runner_egress: {tiers: [{up_to: 3, unit_price: "0.013"}, {up_to: null, unit_price: "0.011"}]}
    script_calls: {tiers: [{up_to: null, unit_price: "0.000333"}]}
accounts:
  acme: pro
  globex:
    - {plan: pro, from: 2026-11-01}
    - {plan: free, from: 2026-03-01}
credits:
  - {id: g2, account: acme, amount: "5.00", from: 2026-10-01, until: 2026-12-01}
  - {id: g1, account: acme, amount: "5.00", from: 2026-10-01, until: 2026-12-01}
  - {id: g0, account: acme, amount: "5.00", from: 2026-10-01, until: 2027-12-01}
  - {id: gx, account: acme, amount: "5.00", from: 2026-11-01, until: 2027-12-01}
"""
DATA = yaml.safe_load(V2)


def half_up(value: Fraction, places: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@pytest.fixture
def book():
    return parse_price_book(copy.deepcopy(DATA))


def test_multiplier_and_unit_unit_are_exact(book):
    raw_bytes = 9 * 2**30 + 123_456_789  # not a whole GiB; 0.37 × it has no short decimal
    calls = 1_234_567
    charges = {
        (c.meter, c.tier): (c.quantity, c.unit, c.unit_price, c.amount)
        for c in price_usage({"acme": {"runner_egress": raw_bytes, "script_calls": calls}}, book)
    }
    quantity = Fraction(37, 100) * Fraction(raw_bytes, 2**30)
    assert 3 < quantity
    assert charges == {
        ("runner_egress", 1): (Decimal(3), "GiB", Decimal("0.013"), Decimal("0.04")),
        ("runner_egress", 2): (
            half_up(quantity - 3, 9), "GiB", Decimal("0.011"),
            half_up((quantity - 3) * Fraction(11, 1000), 2),
        ),
        ("script_calls", 1): (
            Decimal(calls), "unit", Decimal("0.000333"), half_up(Fraction(calls * 333, 10**6), 2)
        ),
    }  # fmt: skip


def test_plan_history_picks_the_latest_entry_at_or_before_the_period(book):
    assert book.plan_for("globex", date(2026, 2, 1)) == "free"  # before the first: default
    assert book.plan_for("globex", date(2026, 3, 1)) == "free"
    assert book.plan_for("globex", date(2026, 10, 1)) == "free"
    assert book.plan_for("globex", date(2026, 11, 1)) == "pro"
    assert book.plan_for("globex", date(2027, 5, 1)) == "pro"
    assert book.plan_for("acme", date(2020, 1, 1)) == "pro"
    assert book.plan_for("nobody", date(2026, 11, 1)) == "free"
    # Usage is priced under the period's plan: free bills requests only, pro its own meters.
    totals = {"globex": {"requests": 5000, "runner_egress": 2**30, "script_calls": 10}}
    assert {c.meter for c in price_usage(totals, book, date(2026, 10, 1))} == {"requests"}
    assert {c.meter for c in price_usage(totals, book, date(2026, 11, 1))} == {
        "runner_egress", "script_calls"
    }  # fmt: skip
    assert book.fee_accounts(date(2026, 10, 1)) == ["acme"]
    assert book.fee_accounts(date(2026, 11, 1)) == ["acme", "globex"]


def test_grants_are_used_by_earliest_until_then_id_within_their_window(book):
    assert [g.id for g in book.grants_usable("acme", date(2026, 10, 1))] == ["g1", "g2", "g0"]
    assert [g.id for g in book.grants_usable("acme", date(2026, 11, 1))] == [
        "g1", "g2", "g0", "gx"
    ]  # fmt: skip
    assert [g.id for g in book.grants_usable("acme", date(2026, 12, 1))] == ["g0", "gx"]
    assert book.grants_usable("acme", date(2026, 9, 1)) == []
    assert book.grants_usable("globex", date(2026, 10, 1)) == []


def test_v2_book_round_trips_through_its_stored_json(book):
    again = price_book_from_json(book.canonical_json())
    assert again == book
    assert again.meter_definition("runner_egress").multiplier == Decimal("0.37")
    assert again.meter_price("pro", "runner_egress").unit == "GiB"


def _parts_digest(*parts):
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"\x00none")
            continue
        data = part.encode()
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:32]


def test_line_ids_without_reference_are_unchanged_and_references_are_distinct():
    inv = invoice_id("acme", date(2026, 10, 1))
    assert line_id(inv, "usage", "requests", 1, None) == "li_" + _parts_digest(
        inv, "usage", "requests", "1", None
    )
    assert line_id(inv, "usage", "requests", 1, None, "") == line_id(
        inv, "usage", "requests", 1, None
    )
    credits = {line_id(inv, "credit", "", 0, None, ref) for ref in ("g1", "g2", "")}
    assert len(credits) == 3


# -- validation -------------------------------------------------------------------------------


def change(path, value):
    def apply(data):
        node = data
        for part in path[:-1]:
            node = node[part]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return apply


DELETE = object()
RUNNER_WHERE = ["meters", "runner_egress", "where"]
TIERS = {"tiers": [{"up_to": None, "unit_price": "1"}]}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (change([*RUNNER_WHERE, "zone"], ["a"]), "meters.runner_egress.where.zone: unknown where key"),
        (change([*RUNNER_WHERE, "region"], []), "meters.runner_egress.where.region: empty list"),
        (change([*RUNNER_WHERE, "region"], {"not": []}), "meters.runner_egress.where.region.not: empty list"),
        (change([*RUNNER_WHERE, "region"], {"but": ["a"]}), "meters.runner_egress.where.region: a condition is"),
        (change([*RUNNER_WHERE, "region"], "runners-eu"), "meters.runner_egress.where.region: must be a list"),
        (change([*RUNNER_WHERE, "region"], [1]), "meters.runner_egress.where.region.0: must be a string"),
        (change(["meters", "runner_egress", "multiplier"], 0.5), "meters.runner_egress.multiplier: multiplier must be a decimal string"),
        (change(["meters", "runner_egress", "multiplier"], "-1"), "meters.runner_egress.multiplier: multiplier must not be negative"),
        (change(["meters", "runner_egress", "measure"], "rows"), "meters.runner_egress.measure: unknown measure 'rows'"),
        (change(["meters", "runner_egress", "unit"], "TB"), "meters.runner_egress.unit: unknown unit 'TB'"),
        (change(["meters", "runner_egress", "unit"], DELETE), "meters.runner_egress.unit: Field required"),
        (change(["meters", "egress_bytes"], {"measure": "bytes", "unit": "GiB"}), "meters.egress_bytes: predefined meter"),
        (change(["plans", "pro", "runner_egres"], TIERS), "plans.pro.runner_egres: unknown meter"),
        (change(["plans", "pro", "runner_egress", "unit"], "1k"), "plans.pro.runner_egress.unit: '1k' does not measure runner_egress"),
        (change(["plans", "pro", "requests"], TIERS), "plans.pro.requests.unit: required for requests"),
        (change(["plans", "pro", "fixed_fee"], 49.0), "plans.pro.fixed_fee: fixed_fee must be a decimal string"),
        (change(["plans", "pro", "minimum"], "-1"), "plans.pro.minimum: minimum must not be negative"),
        (change(["plans", "pro", "minimum"], "1.001"), "plans.pro.minimum: minimum has more than 2 decimals"),
        (change(["accounts", "acme"], "gold"), "accounts.acme: unknown plan 'gold'"),
        (change(["accounts", "globex", 0, "plan"], "gold"), "accounts.globex.0.plan: unknown plan 'gold'"),
        (change(["accounts", "globex", 0, "from"], date(2026, 11, 2)), "accounts.globex.0.from: 2026-11-02 is not the first day of a month"),
        (change(["accounts", "globex", 1, "from"], date(2026, 11, 1)), "accounts.globex.1.from: 2026-11-01 is listed twice"),
        (change(["accounts", "globex", 1, "from"], DELETE), "accounts.globex.1.from: Field required"),
        (change(["accounts", "globex"], []), "accounts.globex: empty list"),
        (change(["accounts", "globex"], 3), "accounts.globex: must be a plan name or a list"),
        (change(["credits", 1, "id"], "g2"), "credits.1.id: duplicated grant id 'g2'"),
        (change(["credits", 0, "amount"], 5.0), "credits.0.amount: amount must be a decimal string"),
        (change(["credits", 0, "amount"], "0"), "credits.0.amount: amount must be positive"),
        (change(["credits", 0, "until"], date(2026, 9, 1)), "credits.0.until: 2026-09-01 must be after from"),
        (change(["credits", 0, "account"], ""), "credits.0.account: account must not be empty"),
    ],
)  # fmt: skip
def test_invalid_v2_books_name_the_path(mutate, expected):
    data = copy.deepcopy(DATA)
    mutate(data)
    with pytest.raises(PriceBookError) as error:
        parse_price_book(data, "book.yaml")
    assert expected in str(error.value) and "book.yaml" in str(error.value)


def test_v2_plans_list_only_the_meters_they_bill_while_v1_plans_need_all_three(book):
    assert book.billed_meters("free") == ["requests"]
    assert book.billed_meters("pro") == ["runner_egress", "script_calls"]
    v1 = {k: v for k, v in copy.deepcopy(DATA).items() if k not in ("meters", "credits")}
    v1["plans"] = {"free": DATA["plans"]["free"]}
    v1["accounts"] = {}
    with pytest.raises(PriceBookError) as error:
        parse_price_book(v1)
    assert "plans.free: meter egress_bytes is missing" in str(error.value)


# -- usage-etl price-book check ---------------------------------------------------------------


def test_price_book_check_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from usage_etl.cli import app

    good = tmp_path / "good.yaml"
    good.write_text(V2)
    result = CliRunner().invoke(app, ["price-book", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK {good}: version v2") and "WARN" not in result.output

    data = copy.deepcopy(DATA)
    data["plans"]["pro"]["requests"] = {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0"}]}
    data["plans"]["pro"]["script_calls"]["unit"] = "GiB"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["price-book", "check", str(bad)])
    assert result.exit_code == 1
    assert "plans.pro.script_calls.unit: 'GiB' does not measure script_calls" in result.output

    del data["plans"]["pro"]["script_calls"]["unit"]
    bad.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("USAGE_ETL_PRICE_BOOK", str(bad))  # the default path
    result = CliRunner().invoke(app, ["price-book", "check"])
    assert result.exit_code == 0, result.output
    assert "WARN plans.pro: meters requests and script_calls overlap" in result.output


def test_job_checks_report_overlaps_as_warn_and_money_problems_as_error():
    import dagster as dg

    from usage_etl.defs.invoicing.checks import ERROR, WARN, _result
    from usage_etl.invoicing.checks import CheckOutcome

    ok = CheckOutcome(True, "fine")
    overlap = CheckOutcome(False, "1 pair overlaps", "make them disjoint", ["plans.p: a and b"])
    over = CheckOutcome(False, "1 grant over-consumed", "re-run", ["g1: consumed 2 of 1"])
    assert _result([(ok, ERROR), (ok, WARN)]).passed
    warn = _result([(ok, ERROR), (overlap, WARN)])
    assert (warn.passed, warn.severity) == (False, dg.AssetCheckSeverity.WARN)
    error = _result([(over, ERROR), (overlap, WARN)])
    assert (error.passed, error.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert "g1: consumed 2 of 1" in error.metadata["examples"].value
