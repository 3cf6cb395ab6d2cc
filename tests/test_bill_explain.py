"""`explain` on hand-made rollup files (every figure computed by hand), the projection rule of
`bill` on hand-made usage, and the `explain` and `bill` commands (formats, exit codes)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

from rollup_files import Landing, parquet_bytes, rollup
from test_invoices import GIB, add_usage, publish_days
from typer.testing import CliRunner

from usage_etl.cli import app
from usage_etl.invoicing.bill import account_bill
from usage_etl.invoicing.completeness import Completeness
from usage_etl.invoicing.explain import explain_invoice
from usage_etl.invoicing.ids import invoice_id
from usage_etl.invoicing.price_book import load_price_book, parse_price_book
from usage_etl.invoicing.run import run_period
from usage_etl.periods import Period
from usage_etl.settings import SAMPLE_PRICE_BOOK
from usage_etl.usage import read_api
from usage_etl.usage.load import ingest_day
from usage_etl.usage.publish import publish_day, record_day_publication

OCT, NOV = Period.parse("2026-10"), Period.parse("2026-11")
DAY = date(2026, 10, 5)
SAMPLE = load_price_book(SAMPLE_PRICE_BOOK)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def run(warehouse, book, period, as_of):
    at = datetime.fromisoformat(as_of).replace(tzinfo=UTC)
    complete = Completeness(unpublished_days=[])
    return run_period(warehouse, book, period, at, f"run-{uuid.uuid4().hex}", lambda: complete)


def ingest(warehouse, landing, day=DAY):
    load = f"load-{uuid.uuid4().hex[:8]}"
    ingest_day(warehouse, landing.area, day, load)
    record_day_publication(warehouse, publish_day(warehouse, day, load), load)


def land_acme(landing):
    """e1 corrected (2 GiB, then 3 GiB a file later), e2 delivered twice, e3 private."""
    acme = {"account_id": "acme"}
    landing.put(
        "a.parquet",
        parquet_bytes(
            [
                rollup("e1", bytes=2 * GIB, request_count=100, **acme),
                rollup("e2", bytes=GIB // 2, request_count=10, project_id="p2", **acme),
            ]
        ),
    )
    landing.put(
        "b.parquet",
        parquet_bytes(
            [
                rollup("e1", bytes=3 * GIB, request_count=100, emitted_minute=30, **acme),
                rollup("e2", bytes=GIB // 2, request_count=10, project_id="p2", **acme),
            ]
        ),
    )
    landing.put("c.parquet", parquet_bytes([
        rollup("e3", bytes=GIB, request_count=7, network_path="private_network",
               node_id="node-a", **acme)]))  # fmt: skip


def test_explain_walks_a_line_back_to_its_files(warehouse, s3_server, settings):
    landing = Landing(s3_server, settings)
    land_acme(landing)
    ingest(warehouse, landing)
    run(warehouse, SAMPLE, OCT, "2026-10-20T00:00:00")
    explained = explain_invoice(warehouse, invoice_id("acme", OCT.start))
    assert explained.ok
    assert read_api.explain_invoice(warehouse, explained.invoice["invoice_id"]).as_dict() == (
        explained.as_dict()
    )
    by_meter = {(e.line["meter"], e.line["tier"]): e for e in explained.lines}
    # acme is on pro: egress 100 GiB at 0.05 first. 3 GiB (e1's correction) + 0.5 GiB (e2).
    egress = by_meter[("egress_bytes", 1)]
    assert egress.line["quantity"] == Decimal("3.5") and egress.total == Decimal("3.5")
    assert egress.usage.raw == 3 * GIB + GIB // 2
    assert egress.usage.projects == {"proj-1": 3 * GIB, "p2": GIB // 2}
    assert egress.usage.days == {DAY: 3 * GIB + GIB // 2}
    assert egress.day_tier_parts == {DAY: Fraction(7, 2)}
    assert egress.tier["lower"] == "0" and egress.tier["upper"] == "100"
    objects = {o.object_key.rsplit("/", 1)[1]: o for o in egress.usage.objects}
    assert set(objects) == {"a.parquet", "b.parquet"}  # c.parquet is private traffic only
    a, b = objects["a.parquet"], objects["b.parquet"]
    # e2's first copy (a < b) counts, its copy in b is a re-delivery; e1's first version
    # in a is superseded by b's later emitted_at.
    assert (a.counted_rows, a.counted_measure, a.superseded_rows, a.redelivered_rows) == (
        1,
        GIB // 2,
        1,
        0,
    )
    assert (b.counted_rows, b.counted_measure, b.superseded_rows, b.redelivered_rows) == (
        1,
        3 * GIB,
        0,
        1,
    )
    etag = landing.client.head_object(Bucket=landing.bucket, Key=a.object_key)["ETag"]
    assert a.etag == etag.strip('"')  # the ledger keeps the ETag without its quotes
    # requests: 100 + 10 + 7 over every path = 0.117k, in pro's free first tier.
    requests = by_meter[("requests", 1)]
    assert requests.usage.raw == 117 and requests.total == Decimal("0.117")
    c = next(o for o in requests.usage.objects if o.object_key.endswith("c.parquet"))
    assert (c.counted_rows, c.counted_measure) == (1, 7)
    assert egress.meter.describe_where() == (
        "direction in ['egress'] AND network_path not in ['private_network']"
    )


def test_explain_command_formats_and_exit_codes(warehouse, s3_server, settings):
    landing = Landing(s3_server, settings)
    land_acme(landing)
    ingest(warehouse, landing)
    run(warehouse, SAMPLE, OCT, "2026-10-20T00:00:00")
    invoice = invoice_id("acme", OCT.start)

    as_json = invoke("explain", invoice, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.output)
    assert payload["ok"] and payload["account_id"] == "acme"
    egress = next(x for x in payload["lines"] if x["meter"] == "egress_bytes")
    assert egress["usage"]["quantity"] == "3.5" and egress["figures"]["explained quantity"]
    assert sum(o["counted_measure"] for o in egress["usage"]["objects"]) == 3 * GIB + GIB // 2

    one = invoke("explain", invoice, "--line", egress["line_id"], "--format", "json")
    assert one.exit_code == 0 and [x["line_id"] for x in json.loads(one.output)["lines"]] == [
        egress["line_id"]
    ]
    table = invoke("explain", invoice)
    assert table.exit_code == 0 and "a.parquet" in table.output and "DIFFERS" not in table.output
    assert "…" not in table.output  # piped: full width, no figure or key shortened

    assert invoke("explain", "inv_nope").exit_code == 1
    assert invoke("explain", invoice, "--line", "li_nope").exit_code == 1
    # More usage published after the draft was computed: the explanation says so (exit 3).
    landing.put("d.parquet", parquet_bytes([rollup("e4", bytes=GIB, account_id="acme")]))
    ingest(warehouse, landing)
    stale = invoke("explain", invoice)
    assert stale.exit_code == 3 and "DIFFERS" in stale.output


# -- bill ------------------------------------------------------------------------------------

# pro: fixed 10.00, minimum 20.00, egress 100 GiB at 0.05 then 0.04, ingress 0.07 per GiB,
# requests free; grant-1 of 25.00 usable October to December.
BOOK = parse_price_book({
    "version": "bill-1", "currency": "USD", "grace_days": 3, "default_plan": "free",
    "plans": {
        "free": {
            "egress_bytes": {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "0.09"}]},
            "ingress_bytes": {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "0"}]},
            "requests": {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0"}]},
        },
        "pro": {
            "fixed_fee": "10.00", "minimum": "20.00",
            "egress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": 100, "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.04"}]},
            "ingress_bytes": {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "0.07"}]},
            "requests": {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0"}]},
        },
    },
    "accounts": {"acme": "pro"},
    "credits": [{"id": "grant-1", "account": "acme", "amount": "25.00", "from": "2026-10-01",
                 "until": "2027-01-01"}],
})  # fmt: skip


def bill_month(warehouse):
    """October final: 10 GiB = 0.50 + 10.00 fixed + 9.50 true-up = 20.00, credit -20.00.
    November, days 1-7 published: 70 GiB egress, 1 GiB ingress, 5000 requests."""
    add_usage(warehouse, date(2026, 10, 9), "acme", egress=10)
    run(warehouse, BOOK, OCT, "2026-11-04T00:00:00")
    add_usage(warehouse, date(2026, 11, 2), "acme", egress=30, ingress=1, requests=5000)
    add_usage(warehouse, date(2026, 11, 6), "acme", egress=40)
    publish_days(warehouse, [date(2026, 11, d) for d in range(1, 8)])


def amounts(lines):
    return {(x["kind"], x["meter"], x["tier"]): (x["quantity"], x["amount"]) for x in lines}


def test_bill_cost_to_date_previous_and_exact_projection(warehouse):
    bill_month(warehouse)
    bill = account_bill(warehouse, BOOK, "acme", NOV)
    assert bill.status == "open" and bill.plan == "pro"
    # To date: 70 GiB x 0.05 = 3.50, 1 GiB x 0.07 = 0.07, 5k requests free; + 10.00 fixed;
    # true-up 20.00 - 13.57 = 6.43; grant-1 has 25.00 - 20.00 = 5.00 left.
    assert amounts(bill.lines) == {
        ("usage", "egress_bytes", 1): (Decimal(70), Decimal("3.50")),
        ("usage", "ingress_bytes", 1): (Decimal(1), Decimal("0.07")),
        ("usage", "requests", 1): (Decimal(5), Decimal("0.00")),
        ("fixed", "", 0): (Decimal(1), Decimal("10.00")),
        ("minimum", "", 0): (Decimal(1), Decimal("6.43")),
        ("credit", "", 0): (Decimal(1), Decimal("-5.00")),
    }
    assert bill.to_date == Decimal("15.00")
    assert bill.previous["period_start"] == OCT.start
    assert bill.previous["subtotal"] == Decimal("0.00")
    # Projection: x 30/7. Egress 300 GiB = 100 x 0.05 + 200 x 0.04 = 13.00; ingress 30/7 GiB
    # (4.285714286 stored) x 0.07 = 0.30; requests 150/7 k free; + 10.00 fixed = 23.30 >= 20.00
    # (no true-up); credit -5.00: 18.30.
    p = bill.projection
    assert (p.days_published, p.period_days, p.factor) == (7, 30, Fraction(30, 7))
    assert p.quantities["ingress_bytes"][1] == Fraction(30, 7)
    assert amounts(p.lines) == {
        ("usage", "egress_bytes", 1): (Decimal(100), Decimal("5.00")),
        ("usage", "egress_bytes", 2): (Decimal(200), Decimal("8.00")),
        ("usage", "ingress_bytes", 1): (Decimal("4.285714286"), Decimal("0.30")),
        ("usage", "requests", 1): (Decimal("21.428571429"), Decimal("0.00")),
        ("fixed", "", 0): (Decimal(1), Decimal("10.00")),
        ("credit", "", 0): (Decimal(1), Decimal("-5.00")),
    }
    assert p.total == Decimal("18.30")
    final = read_api.account_bill(warehouse, BOOK, "acme", OCT)  # the read API's entry
    assert final.status == "final" and final.projection is None
    assert final.to_date == Decimal("0.00")


def test_bill_command_formats_and_exit_codes(warehouse, monkeypatch, tmp_path):
    bill_month(warehouse)
    path = tmp_path / "book.yaml"
    path.write_text(json.dumps(BOOK.model_dump(mode="json", by_alias=True)))
    monkeypatch.setenv("USAGE_ETL_PRICE_BOOK", str(path))
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-11-08T06:00:00Z")

    as_json = invoke("bill", "acme", "--format", "json")  # the period of as-of
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.output)
    assert (payload["period"], payload["to_date"]) == ("2026-11", "15.00")
    assert payload["projection"]["total"] == "18.30"
    assert payload["projection"]["meters"]["egress_bytes"]["projected"] == "300"
    assert payload["previous"]["subtotal"] == "0.00"

    as_csv = invoke("bill", "acme", "--period", "2026-11", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert sum(Decimal(r["amount"]) for r in rows if r["section"] == "to_date") == Decimal(15)
    assert sum(Decimal(r["amount"]) for r in rows if r["section"] == "projection") == Decimal(
        "18.30"
    )
    table = invoke("bill", "acme")
    assert table.exit_code == 0
    assert "cost to date: 15.00 USD" in table.output
    assert "projected period-end total: 18.30 USD" in table.output
    assert "…" not in table.output  # piped: full width, no figure shortened
    empty = invoke("bill", "nobody", "--period", "2026-12", "--format", "json")
    assert empty.exit_code == 0 and json.loads(empty.output)["projection"] is None
    assert invoke("bill", "acme", "--period", "Nov").exit_code == 2


def test_monthly_job_exports_the_usage_statement(warehouse, settings, monkeypatch):
    from test_invoices_job import execute

    from usage_etl.s3 import s3_client

    add_usage(warehouse, date(2026, 10, 3), "beta", egress=25, requests=150_000)
    add_usage(warehouse, date(2026, 10, 31), "acme", egress=150)
    publish_days(warehouse, OCT.days)
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-11-04T00:00:00Z")
    assert execute("2026-10-01").success
    prefix = settings.landing_prefix.rsplit("/", 1)[0] + "/exports/invoices/period=2026-10/"
    s3 = s3_client()
    manifest = json.loads(
        s3.get_object(Bucket=settings.landing_bucket, Key=prefix + "manifest.json")["Body"].read()
    )
    assert manifest["usage_statement"]["adds_up_to_usage_lines"] is True
    body = s3.get_object(Bucket=settings.landing_bucket, Key=prefix + "usage_statement.csv")
    rows = list(csv.DictReader(io.StringIO(body["Body"].read().decode())))
    assert manifest["files"]["usage_statement.csv"]["rows"] == len(rows)
    # beta (free): 25 GiB egress on 2026-10-03 = 10 + 15 in two tiers; 150k requests.
    assert {
        (r["account_id"], r["day"], r["meter"], r["measure_total"], r["quantity"]) for r in rows
    } == {
        ("beta", "2026-10-03", "egress_bytes", str(25 * GIB), "25.000000000"),
        ("beta", "2026-10-03", "requests", "150000", "150.000000000"),
        ("acme", "2026-10-31", "egress_bytes", str(150 * GIB), "150.000000000"),
    }


def test_usage_billable_option_splits_per_meter_and_leaves_the_default_alone(warehouse):
    from test_invoices import USAGE_COLUMNS

    # pro (sample book): p1/xcode 2 GiB public egress + 500 requests, 1 GiB ingress, 1 GiB
    # private egress (no meter counts it); no project/script: 3 GiB public egress, 100 requests.
    add_usage(warehouse, date(2026, 10, 3), "acme", egress=2, ingress=1, private=1,
              requests=500)  # fmt: skip
    warehouse.insert_rows("usage_daily", [[
        date(2026, 10, 4), "acme", "", "eu", "n2", "egress", "download", "script",
        "public_internet", 3 * GIB, 100]], USAGE_COLUMNS)  # fmt: skip
    window = ("--range", "2026-10-01..2026-10-31")
    plain = invoke("usage", "acme", *window, "--format", "json")
    assert plain.exit_code == 0 and "billable" not in json.loads(plain.output)
    result = invoke("usage", "acme", *window, "--format", "json", "--billable")
    assert result.exit_code == 0, result.output
    split = json.loads(result.output)["billable"]
    assert split["plan"] == "pro" and split["units"]["requests"] == "1k"
    groups = {(g["by"], g["key"]): g for g in split["groups"]}
    assert groups[("project_id", "p1")]["meters"] == {
        "egress_bytes": "2",
        "ingress_bytes": "1",
        "requests": "0.5",
    }
    assert groups[("project_id", "p1")]["unbilled_bytes"] == GIB
    assert groups[("artifact_kind", "script")]["meters"] == {
        "egress_bytes": "3",
        "ingress_bytes": "0",
        "requests": "0.1",
    }
    assert groups[("project_id", "")]["unbilled_bytes"] == 0
    assert set(groups) == {
        ("project_id", "p1"),
        ("project_id", ""),
        ("artifact_kind", "xcode"),
        ("artifact_kind", "script"),
    }
    table = invoke("usage", "acme", *window, "--billable")
    assert table.exit_code == 0 and "Billable per project_id (plan pro)" in table.output
    assert "Billable" not in invoke("usage", "acme", *window).output


# -- the worked example of docs/finance.md ---------------------------------------------------

DOC_BOOK = parse_price_book({
    "version": "doc-1", "currency": "USD", "grace_days": 3, "default_plan": "free",
    "plans": {
        "free": {
            "egress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": 10, "unit_price": "0"}, {"up_to": None, "unit_price": "0.09"}]},
            "ingress_bytes": {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "0"}]},
            "requests": {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0"}]},
        },
        "team": {
            "fixed_fee": "49.00", "minimum": "100.00",
            "egress_bytes": {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "0.05"}]},
        },
    },
    "accounts": {"globex": [{"plan": "free", "from": "2026-01-01"},
                            {"plan": "team", "from": "2026-11-01"}]},
    "credits": [{"id": "g-1", "account": "globex", "amount": "120.00", "from": "2026-11-01",
                 "until": "2027-11-01"}],
})  # fmt: skip


def test_the_worked_example_of_the_finance_doc(warehouse):
    dec = Period.parse("2026-12")
    add_usage(warehouse, date(2026, 10, 12), "globex", egress=30)
    run(warehouse, DOC_BOOK, OCT, "2026-11-04T00:00:00")
    add_usage(warehouse, date(2026, 11, 12), "globex", egress=400)
    run(warehouse, DOC_BOOK, NOV, "2026-12-04T00:00:00")
    add_usage(warehouse, date(2026, 10, 30), "globex", egress=5)  # late
    add_usage(warehouse, date(2026, 11, 28), "globex", egress=200)  # late
    add_usage(warehouse, date(2026, 12, 9), "globex", egress=1000)
    run(warehouse, DOC_BOOK, dec, "2026-12-10T00:00:00")

    def got(period):
        return sorted(
            (x["kind"], str(x["corrected_period_start"] or ""), x["meter"], x["tier"],
             x["reference"], x["amount"])
            for x in read_api.account_bill(warehouse, DOC_BOOK, "globex", period).lines
        )  # fmt: skip

    assert got(OCT) == [("usage", "", "egress_bytes", 1, "", Decimal("0.00")),
                        ("usage", "", "egress_bytes", 2, "", Decimal("1.80"))]  # fmt: skip
    assert got(NOV) == sorted([
        ("usage", "", "egress_bytes", 1, "", Decimal("20.00")),
        ("fixed", "", "", 0, "", Decimal("49.00")),
        ("minimum", "", "", 0, "", Decimal("31.00")),
        ("credit", "", "", 0, "g-1", Decimal("-100.00"))])  # fmt: skip
    december = read_api.account_bill(warehouse, DOC_BOOK, "globex", dec)
    assert got(dec) == sorted([
        ("usage", "", "egress_bytes", 1, "", Decimal("50.00")),
        ("fixed", "", "", 0, "", Decimal("49.00")),
        ("minimum", "", "", 0, "", Decimal("1.00")),
        ("adjustment", "2026-10-01", "egress_bytes", 2, "", Decimal("0.45")),
        ("adjustment", "2026-11-01", "egress_bytes", 1, "", Decimal("10.00")),
        ("minimum", "2026-11-01", "", 0, "", Decimal("-10.00")),
        ("credit", "", "", 0, "g-1", Decimal("-20.00"))])  # fmt: skip
    assert december.to_date == Decimal("80.45")
    explained = read_api.explain_invoice(warehouse, invoice_id("globex", dec.start))
    # usage_daily was written by hand here (no staged rows behind it): every check but the
    # source objects' holds.
    assert len(explained.lines) == 7 and all(c.ok for c in explained.checks)
    failing = {c.name for e in explained.lines for c in e.checks if not c.ok}
    assert failing == {"counted rows of the source objects add up to the raw total"}
    figures = {(e.line["kind"], e.line["amount"]): dict(e.figures) for e in explained.lines}
    assert figures[("minimum", Decimal("-10.00"))]["true-up now"] == (
        "max(0, 100.00 − (30.00 + 49.00)) = 21.00"
    )
    assert figures[("credit", Decimal("-20.00"))]["remaining before this invoice"] == (
        "120.00 − 100.00 = 20.00"
    )
