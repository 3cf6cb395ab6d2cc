"""The money view on a simulated month (real SeaweedFS and chDB): `explain` accounts for every
line of every invoice exactly, and the usage statement adds up to the usage lines."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from usage_etl.invoicing.completeness import Completeness
from usage_etl.invoicing.explain import explain_invoice
from usage_etl.invoicing.export import export_period
from usage_etl.invoicing.price_book import parse_price_book
from usage_etl.invoicing.run import run_period
from usage_etl.invoicing.statement import check_statement, exact_sum, statement_rows
from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.landing import Landing
from usage_etl.periods import Period
from usage_etl.settings import Settings
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator
from usage_etl.usage.load import ingest_day
from usage_etl.usage.publish import publish_day, record_day_publication
from usage_etl.warehouse.client import Warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

OCT, NOV = Period.parse("2026-10"), Period.parse("2026-11")
FLEET = FleetSpec(nodes=3, accounts=6, rows_per_day=300, seed=11)
FAULTS = FaultSpec(redelivery_rate=0.2, correction_rate=0.1, conflict_rate=0.02)
OCTOBER_DAYS = [date(2026, 10, d) for d in (1, 5, 10, 16, 23, 31)]
# Small tier bounds, so the simulated accounts cross several tiers of every meter. A v2 book:
# defined meters (a where, a multiplier), a fixed fee and a minimum on pro, a plan change
# (initech: free, then pro from November), an account without usage (wayne) and two grants.
BOOK = parse_price_book({
    "version": "test-1", "currency": "USD", "grace_days": 3, "default_plan": "free",
    "meters": {
        "eu_egress": {"measure": "bytes", "unit": "GiB", "multiplier": "0.5", "where": {
            "direction": ["egress"], "region": ["eu-west-1"],
            "network_path": {"not": ["private_network"]}}},
        "calls": {"measure": "request_count", "unit": "unit", "multiplier": "1.5",
                  "where": {"artifact_kind": {"not": ["xcode"]}}},
    },
    "plans": {
        "free": {
            "egress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": "0.5", "unit_price": "0"}, {"up_to": 3, "unit_price": "0.09"},
                {"up_to": None, "unit_price": "0.07"}]},
            "ingress_bytes": {"unit": "GiB", "tiers": [{"up_to": None, "unit_price": "0"}]},
            "requests": {"unit": "1k", "tiers": [
                {"up_to": "0.2", "unit_price": "0"}, {"up_to": None, "unit_price": "0.004"}]},
        },
        "pro": {
            "fixed_fee": "0.50", "minimum": "2.00",
            "egress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": 1, "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.033333"}]},
            "ingress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": "0.1", "unit_price": "0"}, {"up_to": None, "unit_price": "0.011"}]},
            "requests": {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0.002"}]},
            "eu_egress": {"tiers": [
                {"up_to": 2, "unit_price": "0.02"}, {"up_to": None, "unit_price": "0.01"}]},
            "calls": {"tiers": [
                {"up_to": 500, "unit_price": "0"}, {"up_to": None, "unit_price": "0.0001"}]},
        },
    },
    "accounts": {
        "acme": "pro", "wayne": "pro",
        "initech": [{"plan": "free", "from": "2026-01-01"}, {"plan": "pro", "from": "2026-11-01"}],
    },
    "credits": [
        {"id": "grant-a", "account": "acme", "amount": "2.50", "from": "2026-10-01",
         "until": "2026-12-01"},
        {"id": "grant-b", "account": "acme", "amount": "5.00", "from": "2026-11-01",
         "until": "2027-06-01"},
    ],
})  # fmt: skip
COMPLETE = Completeness(unpublished_days=[])


def simulate_days(warehouse, s3, settings, days, seed=11):
    sim = Simulator(FleetSpec(**{**FLEET.__dict__, "seed": seed}), FAULTS)
    for day in days:
        sim_day = sim.generate_day(day)
        Simulator.upload(sim_day.files, s3, settings.landing_bucket, settings.landing_prefix,
                         include_late=True)  # fmt: skip
        load = f"load-{uuid.uuid4().hex[:8]}"
        ingest_day(warehouse, Landing(s3, settings.landing_bucket, settings.landing_prefix), day,
                   load)  # fmt: skip
        record_day_publication(warehouse, publish_day(warehouse, day, load), load)


def run(warehouse, period, as_of):
    at = datetime.fromisoformat(as_of).replace(tzinfo=UTC)
    return run_period(warehouse, BOOK, period, at, f"run-{uuid.uuid4().hex}", lambda: COMPLETE)


@dataclass
class Month:
    warehouse: Warehouse
    settings: Settings
    october: dict  # line_id -> explanation, right after October was finalized
    october_lines: list[dict]
    october_statement: list[dict]


# One worker builds the month once: a module fixture split over two xdist workers is built twice.
pytestmark = pytest.mark.xdist_group("money_view_month")


@pytest.fixture(scope="module")
def month(s3_server, module_clickhouse_dsn, tmp_path_factory):
    """October simulated on six days and finalized (explained and stated right then); then
    late usage of final October (another day) and a November day, November run as a draft."""
    test_id = uuid.uuid4().hex[:10]
    home = tmp_path_factory.mktemp("dagster_home")
    env = {
        **s3_server.env(),
        "USAGE_ETL_CLICKHOUSE_DSN": module_clickhouse_dsn,
        "USAGE_ETL_DATABASE": f"t_{test_id}",
        "USAGE_ETL_LANDING_URL": f"s3://landing/t-{test_id}/rollups",
        "DAGSTER_HOME": str(Path(home)),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("USAGE_ETL_AS_OF", raising=False)
        settings = Settings()
        warehouse = Warehouse.open(
            settings.clickhouse_dsn, settings.database, lock_timeout_seconds=60
        )
        try:
            apply_migrations(warehouse, DdlOptions.from_settings(settings))
            s3 = s3_server.client()
            simulate_days(warehouse, s3, settings, OCTOBER_DAYS)
            assert run(warehouse, OCT, "2026-11-05T00:00:00").status == "final"
            lines = read_lines(warehouse, OCT)
            month = Month(warehouse, settings, explain_all(warehouse, OCT), lines,
                          statement_rows(warehouse, OCT, lines))  # fmt: skip
            simulate_days(warehouse, s3, settings, [date(2026, 10, 20)], seed=12)
            simulate_days(warehouse, s3, settings, [date(2026, 11, 2)])
            run(warehouse, NOV, "2026-11-10T00:00:00")
            yield month
        finally:
            if not warehouse.embedded:
                warehouse.command(f"DROP DATABASE IF EXISTS `{settings.database}`")
            warehouse.close()


def explain_all(warehouse, period):
    """Explain every line of every invoice of the period; return {line_id: explanation}."""
    found = {}
    for invoice in read_invoices(warehouse, period):
        explained = explain_invoice(warehouse, invoice["invoice_id"])
        assert explained.checks and all(c.ok for c in explained.checks)  # lines = subtotal
        for line in explained.lines:
            found[line.line["line_id"]] = line
    assert set(found) == {line["line_id"] for line in read_lines(warehouse, period)}
    return found


def assert_exact(explanation):
    line = explanation.line
    assert explanation.ok, [c for c in explanation.checks if not c.ok]
    assert explanation.total == line["quantity"]
    assert Decimal(dict(explanation.figures)["explained amount"]) == line["amount"]
    if line["kind"] in ("fixed", "minimum", "credit"):
        assert line["quantity"] == 1 and explanation.usage is None
        return
    usage = explanation.usage
    # The walk, recomputed here from its parts: raw → exact quantity → the tier's slice.
    days = sum(usage.days.values())
    objects = sum(o.counted_measure for o in usage.objects)
    assert days == objects == sum(usage.nodes.values()) == sum(usage.projects.values())
    quantity = Fraction(days, usage.definition.unit_size) * Fraction(usage.definition.multiplier)
    lower = Fraction(Decimal(explanation.tier["lower"]))
    upper = explanation.tier["upper"]
    top = quantity if upper is None else min(quantity, Fraction(Decimal(upper)))
    part = max(top - lower, Fraction(0))
    assert sum(explanation.day_tier_parts.values()) == part
    if line["kind"] == "usage":
        stored = (part * 10**9 * 2 + 1) // 2  # half up, positive
        assert Decimal(stored).scaleb(-9) == line["quantity"]


def test_explain_accounts_for_every_line_exactly(month):
    october = month.october
    assert len(october) > 10
    assert {e.line["kind"] for e in october.values()} == {"usage", "fixed", "minimum", "credit"}
    assert {e.line["tier"] for e in october.values()} >= {1, 2, 3}
    assert {"eu_egress", "calls"} <= {e.line["meter"] for e in october.values()}
    for explanation in october.values():
        assert_exact(explanation)
    objects = [o for e in october.values() if e.usage for o in e.usage.objects]
    # The faults reached the explanation: copies and corrections are named, never counted.
    assert any(o.redelivered_rows for o in objects) and any(o.superseded_rows for o in objects)
    prefix = month.settings.landing_prefix
    assert all(o.etag and o.object_key.startswith(prefix) for o in objects)

    november = explain_all(month.warehouse, NOV)
    kinds = {e.line["kind"] for e in november.values()}
    assert kinds == {"usage", "adjustment", "fixed", "minimum", "credit"}
    for explanation in november.values():
        assert_exact(explanation)
    # Late October usage lowered acme's October true-up: a negative minimum correction.
    (lowered,) = [
        e
        for e in november.values()
        if e.line["kind"] == "minimum" and e.line["corrected_period_start"]
    ]
    assert lowered.line["amount"] < 0
    # grant-a: 2.50 spread over October and November, then grant-b.
    credits = [e.line for e in {**october, **november}.values() if e.line["kind"] == "credit"]
    assert sum(c["amount"] for c in credits if c["reference"] == "grant-a") == Decimal("-2.50")
    assert {c["period_start"].month for c in credits if c["reference"] == "grant-a"} == {10, 11}
    adjustment = next(e for e in november.values() if e.line["kind"] == "adjustment")
    assert adjustment.billed and "2026-10-20" in " ".join(adjustment.notes)


def test_final_lines_against_late_usage_add_up_with_the_adjustments(month):
    """Every final October line, explained after late October usage arrived: what today's
    usage puts in its tier = the line's quantity + the adjustments billed on November."""
    now = explain_all(month.warehouse, OCT)
    adjustments = {}
    for line in read_lines(month.warehouse, NOV):
        if line["kind"] == "adjustment":
            adjustments[(line["account_id"], line["meter"], line["tier"])] = line["quantity"]
    assert adjustments
    stale = 0
    for explanation in now.values():
        line = explanation.line
        if line["kind"] != "usage":
            continue
        key = (line["account_id"], line["meter"], line["tier"])
        assert explanation.total == line["quantity"] + adjustments.get(key, Decimal(0))
        stale += not explanation.ok
        assert explanation.ok == (key not in adjustments)
    assert stale


def test_usage_statement_adds_up_to_the_usage_lines(month):
    for lines, rows in (
        (month.october_lines, month.october_statement),
        (read_lines(month.warehouse, NOV), statement_rows(
            month.warehouse, NOV, read_lines(month.warehouse, NOV))),
    ):  # fmt: skip
        checks = check_statement(rows, lines)
        usage = {(li["invoice_id"], li["meter"]) for li in lines if li["kind"] == "usage"}
        assert {(c.invoice_id, c.meter) for c in checks} == usage
        for c in checks:
            assert c.ok, c
            meter_rows = [
                r for r in rows if (r["invoice_id"], r["meter"]) == (c.invoice_id, c.meter)
            ]
            # Recomputed here: the lines' quantity is the exact sum split into stored tiers,
            # and each row stays within one nano-unit per tier of its exact quantity.
            exact = exact_sum(meter_rows)
            assert abs(Fraction(c.lines) - exact) <= Fraction(3, 10**9)
            assert sum(r["quantity"] for r in meter_rows) == c.lines
            for r in meter_rows:
                assert abs(
                    Fraction(r["quantity"]) - Fraction(Decimal(r["quantity_exact"]))
                ) <= Fraction(3, 10**9)
        keys = [(r["invoice_id"], r["meter"], r["day"], r["project_id"]) for r in rows]
        assert len(keys) == len(set(keys))
        assert {r["day"].month for r in rows} == {lines[0]["period_start"].month}


def test_export_holds_the_statement_and_its_manifest_entry(month, s3_server):
    lines = read_lines(month.warehouse, NOV)
    statement = statement_rows(month.warehouse, NOV, lines)
    s3 = s3_server.client()
    bucket, prefix = month.settings.landing_bucket, month.settings.landing_prefix
    result = export_period(s3, bucket, prefix, NOV, lines, read_invoices(month.warehouse, NOV),
                           statement=statement)  # fmt: skip
    files = result.manifest["files"]
    assert files["usage_statement.csv"]["rows"] == len(statement) > 0
    assert result.manifest["usage_statement"]["adds_up_to_usage_lines"] is True
    body = s3.get_object(Bucket=bucket, Key=result.prefix + "usage_statement.parquet")["Body"]
    data = body.read()
    assert hashlib.sha256(data).hexdigest() == files["usage_statement.parquet"]["sha256"]
    table = pq.read_table(io.BytesIO(data)).to_pylist()
    text = s3.get_object(Bucket=bucket, Key=result.prefix + "usage_statement.csv")["Body"]
    rows = list(csv.DictReader(io.StringIO(text.read().decode())))
    usage = sum(li["quantity"] for li in lines if li["kind"] == "usage")
    assert sum(r["quantity"] for r in table) == sum(Decimal(r["quantity"]) for r in rows) == usage
    assert [int(r["measure_total"]) for r in rows] == [int(r["measure_total"]) for r in table]
    # A statement that does not add up is reported in the manifest, not hidden.
    broken = [dict(statement[0], quantity=statement[0]["quantity"] + Decimal("1E-9"))]
    manifest = export_period(s3, bucket, prefix, NOV, lines, [], statement=broken).manifest
    assert manifest["usage_statement"]["adds_up_to_usage_lines"] is False
    assert manifest["usage_statement"]["mismatches"]
