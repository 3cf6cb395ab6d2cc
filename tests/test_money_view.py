"""The money view on a simulated month (real SeaweedFS and chDB): `explain` accounts for every
line of every invoice exactly, and the usage statement adds up to the usage lines."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

from usage_etl.defs.usage.assets import _day_state
from usage_etl.ingest.load import ingest_day
from usage_etl.ingest.publish import publish_day, record_publication
from usage_etl.invoicing.completeness import Completeness
from usage_etl.invoicing.explain import explain_invoice
from usage_etl.invoicing.periods import Period
from usage_etl.invoicing.run import run_period
from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.pricing import parse_price_book
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator

OCT, NOV = Period.parse("2026-10"), Period.parse("2026-11")
FLEET = FleetSpec(nodes=3, accounts=6, rows_per_day=300, seed=11)
FAULTS = FaultSpec(redelivery_rate=0.2, correction_rate=0.1, conflict_rate=0.02)
OCTOBER_DAYS = [date(2026, 10, d) for d in (1, 5, 10, 16, 23, 31)]
# Small tier bounds, so the simulated accounts cross several tiers of every meter.
BOOK = parse_price_book({
    "version": "test-1", "currency": "USD", "grace_days": 3, "default_plan": "free",
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
            "egress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": 1, "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.033333"}]},
            "ingress_bytes": {"unit": "GiB", "tiers": [
                {"up_to": "0.1", "unit_price": "0"}, {"up_to": None, "unit_price": "0.011"}]},
            "requests": {"unit": "1k", "tiers": [{"up_to": None, "unit_price": "0.002"}]},
        },
    },
    "accounts": {"acme": "pro", "initech": "pro"},
})  # fmt: skip
COMPLETE = Completeness(unpublished_days=[])


def simulate_days(warehouse, s3, settings, days, seed=11):
    sim = Simulator(FleetSpec(**{**FLEET.__dict__, "seed": seed}), FAULTS)
    for day in days:
        sim_day = sim.generate_day(day)
        Simulator.upload(sim_day.files, s3, settings.landing_bucket, settings.landing_prefix,
                         include_late=True)  # fmt: skip
        load = f"load-{uuid.uuid4().hex[:8]}"
        ingest_day(warehouse, s3, settings.landing_bucket, settings.landing_prefix, day, load)
        record_publication(warehouse, publish_day(warehouse, day, load), load,
                           _day_state(warehouse, day))  # fmt: skip


def run(warehouse, period, as_of):
    at = datetime.fromisoformat(as_of).replace(tzinfo=UTC)
    return run_period(warehouse, BOOK, period, at, f"run-{uuid.uuid4().hex}", lambda: COMPLETE)


def explain_all(warehouse, period):
    """Explain every line of every invoice of the period; return {line_id: explanation}."""
    found = {}
    for invoice in read_invoices(warehouse, period):
        explained = explain_invoice(warehouse, invoice["invoice_id"])
        for line in explained.lines:
            found[line.line["line_id"]] = line
    assert set(found) == {line["line_id"] for line in read_lines(warehouse, period)}
    return found


def assert_exact(explanation):
    line = explanation.line
    assert explanation.ok, [c for c in explanation.checks if not c.ok]
    assert explanation.total == line["quantity"]
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


def test_explain_accounts_for_every_line_exactly(warehouse, s3_server, settings):
    s3 = s3_server.client()
    simulate_days(warehouse, s3, settings, OCTOBER_DAYS)
    assert run(warehouse, OCT, "2026-11-05T00:00:00").status == "final"
    october = explain_all(warehouse, OCT)
    assert len(october) > 10
    assert {e.line["kind"] for e in october.values()} == {"usage"}
    assert {e.line["tier"] for e in october.values()} >= {1, 2, 3}
    for explanation in october.values():
        assert_exact(explanation)
    objects = [o for e in october.values() for o in e.usage.objects]
    # The faults reached the explanation: copies and corrections are named, never counted.
    assert any(o.redelivered_rows for o in objects) and any(o.superseded_rows for o in objects)
    assert all(o.etag and o.object_key.startswith(settings.landing_prefix) for o in objects)
    # Late usage of final October (another simulated day), and November usage: adjustments.
    simulate_days(warehouse, s3, settings, [date(2026, 10, 20)], seed=12)
    simulate_days(warehouse, s3, settings, [date(2026, 11, 2)])
    run(warehouse, NOV, "2026-11-10T00:00:00")
    november = explain_all(warehouse, NOV)
    kinds = {e.line["kind"] for e in november.values()}
    assert kinds == {"usage", "adjustment"}
    for explanation in november.values():
        assert_exact(explanation)
    adjustment = next(e for e in november.values() if e.line["kind"] == "adjustment")
    assert adjustment.billed and "2026-10-20" in " ".join(adjustment.notes)
    # October's final lines still read their finalized quantities; explain flags the ones
    # that today's (late) usage no longer matches, the ones the adjustments bill.
    stale = {lid for lid, e in explain_all(warehouse, OCT).items() if not e.ok}
    corrected = {(e.line["meter"], e.line["tier"], e.line["account_id"])
                 for e in november.values() if e.line["kind"] == "adjustment"}  # fmt: skip
    assert {(october[lid].line["meter"], october[lid].line["tier"],
             october[lid].line["account_id"]) for lid in stale} == corrected  # fmt: skip
