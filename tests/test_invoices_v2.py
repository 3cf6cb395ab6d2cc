# ruff: noqa: E501  (predicate tables read best one meter per line)
"""Price book v2 end to end on real chDB (contract §3.1, §5): defined meters, fixed fees,
minimum true-ups and their adjustments, credits across periods, plan history.

Every expected line is computed here, independently of usage_etl's pricing: the usage rows
are filtered with plain Python predicates, summed, multiplied and divided as exact Fractions,
split into graduated tiers by hand and rounded with Decimal.quantize(ROUND_HALF_UP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import yaml
from test_invoices import NOV, OCT, USAGE_COLUMNS, publish_days, run

from usage_etl.invoicing import checks
from usage_etl.invoicing.price_book import parse_price_book
from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.periods import Period

GIB = 2**30
DEC = Period.parse("2026-12")
D = Decimal
RUNNERS = ("runners-eu", "runners-us")

BOOK_YAML = """
version: "v2-test"
currency: USD
grace_days: 3
default_plan: free
meters:
  runner_egress:
    measure: bytes
    unit: GiB
    where:
      direction: [egress]
      region: [runners-eu, runners-us]
      network_path: {not: [private_network]}
    multiplier: "0.5"
  other_egress:
    measure: bytes
    unit: GiB
    where:
      direction: [egress]
      region: {not: [runners-eu, runners-us]}
      network_path: {not: [private_network]}
  script_requests:
    measure: request_count
    unit: unit
    where: {project_id: [""]}
plans:
  free:
    egress_bytes:
      unit: GiB
      tiers: [{up_to: 10, unit_price: "0"}, {up_to: null, unit_price: "0.09"}]
    requests: {unit: 1k, tiers: [{up_to: null, unit_price: "0.004"}]}
  pro:
    fixed_fee: "49.00"
    minimum: "100.00"
    runner_egress: {tiers: [{up_to: 10, unit_price: "0"}, {up_to: null, unit_price: "0.05"}]}
    other_egress: {unit: GiB, tiers: [{up_to: null, unit_price: "0.04"}]}
    script_requests: {tiers: [{up_to: null, unit_price: "0.001"}]}
accounts:
  acme: pro
  globex:
    - {plan: free, from: 2026-01-01}
    - {plan: pro, from: 2026-11-01}
credits:
  - {id: grant-b, account: acme, amount: "80.00", from: 2026-10-01, until: 2027-01-01}
  - {id: grant-c, account: acme, amount: "10.00", from: 2026-10-01, until: 2026-12-01}
  - {id: grant-a, account: acme, amount: "60.00", from: 2026-10-01, until: 2026-12-01}
"""
BOOK = parse_price_book(yaml.safe_load(BOOK_YAML))


# -- the independent model --------------------------------------------------------------------


def half_up(value: Fraction, places: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Meter:
    counts: Callable[[dict], bool]
    measure: str
    unit: int
    multiplier: Fraction
    tiers: list[tuple[int | None, str]]


PRO_METERS = {
    "runner_egress": Meter(
        lambda r: r["direction"] == "egress"
        and r["region"] in RUNNERS
        and r["network_path"] != "private_network",
        "bytes", GIB, Fraction(1, 2), [(10, "0"), (None, "0.05")],
    ),
    "other_egress": Meter(
        lambda r: r["direction"] == "egress"
        and r["region"] not in RUNNERS
        and r["network_path"] != "private_network",
        "bytes", GIB, Fraction(1), [(None, "0.04")],
    ),
    "script_requests": Meter(
        lambda r: r["project_id"] == "", "request_count", 1, Fraction(1), [(None, "0.001")]
    ),
}  # fmt: skip
FREE_METERS = {
    "egress_bytes": Meter(
        lambda r: r["direction"] == "egress" and r["network_path"] != "private_network",
        "bytes", GIB, Fraction(1), [(10, "0"), (None, "0.09")],
    ),
    "requests": Meter(lambda r: True, "request_count", 1000, Fraction(1), [(None, "0.004")]),
}  # fmt: skip


def usage_expected(rows: list[dict], meters: dict[str, Meter]) -> dict:
    """(meter, tier) -> (quantity, amount) of one account's rows, computed by hand."""
    out = {}
    for name, meter in meters.items():
        raw = sum(r[meter.measure] for r in rows if meter.counts(r))
        quantity = meter.multiplier * Fraction(raw, meter.unit)
        lower = Fraction(0)
        for index, (up_to, price) in enumerate(meter.tiers, start=1):
            top = quantity if up_to is None else min(quantity, Fraction(up_to))
            if top > lower:
                part = top - lower
                out[(name, index)] = (half_up(part, 9), half_up(part * Fraction(price), 2))
            if up_to is None or quantity <= up_to:
                break
            lower = Fraction(up_to)
    return out


# -- usage in the warehouse -------------------------------------------------------------------


def row(day, account, *, region="us-east-1", direction="egress", path="public_internet",
        project="p1", kind="xcode", gib=0, requests=0, extra_bytes=0):  # fmt: skip
    return {
        "day": day, "account_id": account, "project_id": project, "region": region,
        "node_id": f"n-{region}", "direction": direction,
        "operation": "download" if direction == "egress" else "upload", "artifact_kind": kind,
        "network_path": path, "bytes": gib * GIB + extra_bytes, "request_count": requests,
    }  # fmt: skip


def insert(wh, rows):
    wh.insert_rows("usage_daily", [[r[c] for c in USAGE_COLUMNS] for r in rows], USAGE_COLUMNS)


def october_rows():
    d = date(2026, 10, 3)
    return [
        # runner egress: counted at half, private network excluded
        row(d, "acme", region="runners-eu", gib=30, requests=1000, extra_bytes=3),
        row(
            d,
            "acme",
            region="runners-us",
            project="",
            kind="script",
            path="unknown",
            gib=8,
            requests=500,
        ),
        row(d, "acme", region="runners-eu", path="private_network", gib=4, requests=7),
        # other egress
        row(d, "acme", region="us-east-1", project="p2", gib=20, requests=2000),
        # ingress: no pro meter bills bytes of it, but script_requests counts its requests
        row(
            d,
            "acme",
            direction="ingress",
            project="",
            kind="script",
            path="unknown",
            gib=2,
            requests=300,
        ),
        # globex is on free in October
        row(d, "globex", gib=15, requests=2000),
    ]


def lines_of(wh, period, account):
    return [r for r in read_lines(wh, period) if r["account_id"] == account]


def usage_got(lines, kind="usage"):
    return {
        (r["meter"], r["tier"]): (r["quantity"], r["amount"]) for r in lines if r["kind"] == kind
    }


def amounts(lines, kind):
    return sorted(
        ((r["reference"], r["corrected_period_start"], r["amount"]) for r in lines
         if r["kind"] == kind),
        key=str,
    )  # fmt: skip


def subtotal(wh, period, account):
    (invoice,) = [i for i in read_invoices(wh, period) if i["account_id"] == account]
    return invoice["subtotal"]


# -- tests ------------------------------------------------------------------------------------


def test_defined_meters_fees_minimum_and_credits_over_three_periods(warehouse, settings):
    rows = october_rows()
    insert(warehouse, rows)
    run(warehouse, settings, OCT, "2026-10-20T00:00:00", book=BOOK)
    acme = lines_of(warehouse, OCT, "acme")
    acme_rows = [r for r in rows if r["account_id"] == "acme"]
    expected_usage = usage_expected(acme_rows, PRO_METERS)
    assert usage_got(acme) == expected_usage
    usage_total = sum(amount for _, amount in expected_usage.values())
    fixed = D("49.00")
    trueup = max(D(0), D("100.00") - (usage_total + fixed))
    assert trueup > 0
    assert amounts(acme, "fixed") == [("", None, fixed)]
    assert amounts(acme, "minimum") == [("", None, trueup)]
    for line in acme:
        if line["kind"] in ("fixed", "minimum", "credit"):
            assert (line["quantity"], line["unit"], line["tier"], line["meter"]) == (
                D(1),
                "period",
                0,
                "",
            )
            assert line["unit_price"] == line["amount"]
        else:
            assert line["reference"] == ""
    # Credits: earliest until first, then id: grant-a (60), grant-c (10), then grant-b.
    total = usage_total + fixed + trueup
    take_a = min(D(60), total)
    take_c = min(D(10), total - take_a)
    take_b = min(D(80), total - take_a - take_c)
    assert amounts(acme, "credit") == sorted(
        [("grant-a", None, -take_a), ("grant-c", None, -take_c), ("grant-b", None, -take_b)],
        key=str,
    )
    assert subtotal(warehouse, OCT, "acme") == D(0)

    # globex is on free in October: v1 meters, no fixed fee, no minimum.
    globex = lines_of(warehouse, OCT, "globex")
    globex_rows = [r for r in rows if r["account_id"] == "globex"]
    assert usage_got(globex) == usage_expected(globex_rows, FREE_METERS)
    assert {r["kind"] for r in globex} == {"usage"} and {r["plan"] for r in globex} == {"free"}

    # November (October still draft: its consumption counts): no usage, acme is billed the fee
    # and the full true-up; only grant-b has a balance left.
    run(warehouse, settings, NOV, "2026-11-02T00:00:00", book=BOOK)
    nov = lines_of(warehouse, NOV, "acme")
    assert {r["status"] for r in read_lines(warehouse, OCT)} == {"draft"}
    assert amounts(nov, "fixed") == [("", None, fixed)]
    assert amounts(nov, "minimum") == [("", None, D(100) - fixed)]
    left_b = D(80) - take_b
    assert amounts(nov, "credit") == [("grant-b", None, -min(left_b, D(100)))]
    assert subtotal(warehouse, NOV, "acme") == D(100) - min(left_b, D(100))
    # globex changes to pro from November: an invoice without usage (named, fee and minimum).
    globex_nov = lines_of(warehouse, NOV, "globex")
    assert {(r["kind"], r["plan"], r["amount"]) for r in globex_nov} == {
        ("fixed", "pro", fixed),
        ("minimum", "pro", D("51.00")),
    }

    # December: grant-a and grant-c expired (until 2026-12-01), grant-b is used up.
    run(warehouse, settings, DEC, "2026-12-02T00:00:00", book=BOOK)
    dec = lines_of(warehouse, DEC, "acme")
    assert amounts(dec, "credit") == []
    assert subtotal(warehouse, DEC, "acme") == D(100)

    for period in (OCT, NOV, DEC):
        assert checks.credits_within_grants(warehouse, period).passed
        assert checks.subtotals(warehouse, period).passed
        assert checks.conservation(warehouse, period).passed
        assert checks.meter_overlaps(warehouse, period).passed


def test_reruns_of_a_v2_period_leave_identical_rows(warehouse, settings):
    insert(warehouse, october_rows())
    run(warehouse, settings, OCT, "2026-10-20T00:00:00", book=BOOK)
    first = read_lines(warehouse, OCT)
    run(warehouse, settings, OCT, "2026-10-21T00:00:00", book=BOOK)
    second = read_lines(warehouse, OCT)
    strip = [{k: v for k, v in r.items() if k != "computed_at"} for r in first]
    assert strip == [{k: v for k, v in r.items() if k != "computed_at"} for r in second]
    assert len({r["line_id"] for r in first}) == len(first)


def test_late_usage_of_a_final_period_adjusts_usage_and_true_up(warehouse, settings):
    rows = october_rows()
    insert(warehouse, rows)
    publish_days(warehouse, OCT.days)
    outcome = run(warehouse, settings, OCT, "2026-11-04T00:00:00", book=BOOK)
    assert outcome.status == "final"
    final_oct = read_lines(warehouse, OCT)
    oct_total = subtotal(warehouse, OCT, "acme")
    oct_acme = [r for r in final_oct if r["account_id"] == "acme"]
    before_credits = sum(r["amount"] for r in oct_acme if r["kind"] != "credit")

    # Late October runner egress pushes acme over its minimum.
    late = [row(date(2026, 10, 9), "acme", region="runners-us", gib=2000)]
    insert(warehouse, late)
    run(warehouse, settings, NOV, "2026-11-10T00:00:00", book=BOOK)
    nov = lines_of(warehouse, NOV, "acme")
    acme_rows = [r for r in rows + late if r["account_id"] == "acme"]
    new_usage = usage_expected(acme_rows, PRO_METERS)
    old_usage = usage_got(oct_acme)
    expected_adjustments = {
        key: (new_usage[key][0] - old_usage.get(key, (0, 0))[0],
              new_usage[key][1] - old_usage.get(key, (0, 0))[1])
        for key in new_usage
        if new_usage[key] != old_usage.get(key)
    }  # fmt: skip
    assert usage_got(nov, "adjustment") == expected_adjustments
    assert {r["corrected_period_start"] for r in nov if r["kind"] == "adjustment"} == {OCT.start}
    new_usage_total = sum(amount for _, amount in new_usage.values())
    new_trueup = max(D(0), D(100) - (new_usage_total + D(49)))
    old_trueup = sum(r["amount"] for r in oct_acme if r["kind"] == "minimum")
    assert amounts(nov, "minimum") == sorted(
        [("", None, D(100) - D(49)), ("", OCT.start, new_trueup - old_trueup)], key=str
    )
    # The corrections add up to October's new total before credits minus its final one.
    corrections = sum(r["amount"] for r in nov if r["corrected_period_start"] == OCT.start)
    assert corrections == new_usage_total + D(49) + new_trueup - before_credits
    # October is untouched, its credits too; November's credits cover its own lines and the
    # corrections with what is left of grant-b (grant-a and grant-c were used up).
    assert read_lines(warehouse, OCT) == final_oct and subtotal(warehouse, OCT, "acme") == oct_total
    consumed_b = -sum(r["amount"] for r in oct_acme if r["reference"] == "grant-b")
    nov_before_credits = sum(r["amount"] for r in nov if r["kind"] != "credit")
    take = min(D(80) - consumed_b, nov_before_credits)
    assert amounts(nov, "credit") == [("grant-b", None, -take)]
    assert subtotal(warehouse, NOV, "acme") == nov_before_credits - take
    for period in (OCT, NOV):
        assert checks.conservation(warehouse, period).passed
        assert checks.credits_within_grants(warehouse, period).passed

    # November final; more late October usage: only the new difference, on December.
    publish_days(warehouse, NOV.days)
    assert run(warehouse, settings, NOV, "2026-12-04T00:00:00", book=BOOK).status == "final"
    more = [row(date(2026, 10, 10), "acme", region="runners-eu", gib=100)]
    insert(warehouse, more)
    run(warehouse, settings, DEC, "2026-12-05T00:00:00", book=BOOK)
    dec = lines_of(warehouse, DEC, "acme")
    latest = usage_expected(acme_rows + more, PRO_METERS)
    key = ("runner_egress", 2)
    assert usage_got(dec, "adjustment") == {
        key: (latest[key][0] - new_usage[key][0], latest[key][1] - new_usage[key][1])
    }
    assert amounts(dec, "minimum") == [("", None, D(51))]  # December's own true-up only


def test_a_period_is_priced_under_the_plan_in_force_at_its_start(warehouse, settings):
    d_oct, d_nov = date(2026, 10, 20), date(2026, 11, 20)
    rows = [row(d_oct, "globex", gib=25), row(d_nov, "globex", region="runners-eu", gib=40)]
    insert(warehouse, rows)
    run(warehouse, settings, OCT, "2026-10-25T00:00:00", book=BOOK)
    run(warehouse, settings, NOV, "2026-11-25T00:00:00", book=BOOK)
    oct_lines, nov_lines = lines_of(warehouse, OCT, "globex"), lines_of(warehouse, NOV, "globex")
    assert usage_got(oct_lines) == usage_expected(rows[:1], FREE_METERS)
    assert usage_got(nov_lines) == usage_expected(rows[1:], PRO_METERS)
    assert {r["plan"] for r in oct_lines} == {"free"} and {r["plan"] for r in nov_lines} == {"pro"}
    assert amounts(nov_lines, "fixed") == [("", None, D(49))]


def test_credit_check_catches_over_consumption_and_overlaps_warn(warehouse, settings):
    insert(warehouse, october_rows())
    run(warehouse, settings, OCT, "2026-10-20T00:00:00", book=BOOK)
    lines = warehouse.table("invoice_line_items")
    warehouse.command(
        f"ALTER TABLE {lines} UPDATE amount = amount * 10 WHERE reference = 'grant-a'",
        mutations_sync=1,
    )
    broken = checks.credits_within_grants(warehouse, OCT)
    assert not broken.passed and broken.details == ["grant-a: consumed 600.00 of a 60.00 grant"]

    data = yaml.safe_load(BOOK_YAML)
    data["plans"]["pro"]["requests"] = {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0"}]}
    del data["meters"]["other_egress"]["where"]["region"]
    overlapping = parse_price_book(data)
    assert checks.overlapping_meters(overlapping) == [
        "plans.pro: meters requests and script_requests overlap",
        "plans.pro: meters runner_egress and other_egress overlap",
    ]
    assert checks.overlapping_meters(BOOK) == []


def test_named_account_without_usage_gets_a_fee_invoice(warehouse, settings):
    insert(warehouse, [row(date(2026, 10, 1), "solo", gib=11)])
    run(warehouse, settings, OCT, "2026-10-20T00:00:00", book=BOOK)
    acme = lines_of(warehouse, OCT, "acme")
    assert {r["kind"] for r in acme} == {"fixed", "minimum", "credit"}
    assert amounts(acme, "minimum") == [("", None, D(51))]
    assert subtotal(warehouse, OCT, "acme") == D(0)  # 100 before credits, all covered
    # An account not named in the book only gets an invoice for its usage (default plan).
    assert {r["kind"] for r in lines_of(warehouse, OCT, "solo")} == {"usage"}


WHERE_BOOK = """
version: "where"
currency: USD
grace_days: 3
default_plan: p
meters:
  in_list: {measure: bytes, unit: GiB, where: {region: [eu, ap], operation: [download]}}
  not_list: {measure: bytes, unit: GiB, where: {artifact_kind: {not: [xcode, gradle]}}}
  no_project: {measure: request_count, unit: unit, where: {project_id: [""]}}
  by_node: {measure: request_count, unit: 1k, where: {node_id: {not: [n-eu]}, direction: [ingress]}}
  everything: {measure: bytes, unit: unit}
plans:
  p:
    in_list: {tiers: [{up_to: null, unit_price: "1"}]}
"""


def test_where_filters_run_in_clickhouse_exactly_as_written(warehouse):
    from usage_etl.invoicing.store import meter_totals

    book = parse_price_book(yaml.safe_load(WHERE_BOOK))
    big = 2**63 - 1  # several of these overflow UInt64 when summed
    d = date(2026, 10, 4)
    rows = [
        row(d, "a", region="eu", kind="xcode", extra_bytes=big, requests=5),
        row(d, "a", region="eu", kind="gradle", project="", extra_bytes=big, requests=7),
        row(d, "a", region="ap", kind="nx", direction="ingress", project="", gib=3, requests=11),
        row(d, "a", region="us", kind="metro", extra_bytes=big, requests=13),
        row(d, "a", region="us", kind="script", direction="ingress", extra_bytes=17),
        row(date(2026, 11, 1), "a", region="eu", gib=1000),  # another period
        row(d, "b", region="'; DROP TABLE x; --", project="", extra_bytes=1, requests=1),
    ]
    for r in rows[2:5]:
        r["node_id"] = "n-other"
    insert(warehouse, rows)
    predicates = {
        "in_list": ("bytes", lambda r: r["region"] in ("eu", "ap") and r["operation"] == "download"),
        "not_list": ("bytes", lambda r: r["artifact_kind"] not in ("xcode", "gradle")),
        "no_project": ("request_count", lambda r: r["project_id"] == ""),
        "by_node": ("request_count", lambda r: r["node_id"] != "n-eu" and r["direction"] == "ingress"),
        "everything": ("bytes", lambda r: True),
        "egress_bytes": ("bytes", lambda r: r["direction"] == "egress" and r["network_path"] != "private_network"),
        "ingress_bytes": ("bytes", lambda r: r["direction"] == "ingress"),
        "requests": ("request_count", lambda r: True),
    }  # fmt: skip
    october = [r for r in rows if r["day"] < NOV.start]
    expected = {
        account: {
            meter: sum(r[measure] for r in october if r["account_id"] == account and test(r))
            for meter, (measure, test) in predicates.items()
        }
        for account in ("a", "b")
    }
    assert meter_totals(warehouse, OCT, book) == expected
    assert expected["a"]["everything"] > 2**64  # summed without overflow
