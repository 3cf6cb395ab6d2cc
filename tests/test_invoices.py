"""monthly_invoices end to end on real chDB and SeaweedFS (contract §5).

Until the daily ingestion lands, usage arrives the way daily_usage publishes it: rows in
usage_daily, one usage_day_publications row per published day, ledger rows in ingest_objects
for the files it read. Expected amounts are computed by hand from the sample price book:
free egress 10 GiB at 0 then 0.09/GiB, free requests 100k at 0 then 0.004/1k; pro (acme)
egress 100 GiB at 0.05, to 1000 GiB at 0.04.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
import yaml

from usage_etl.invoicing import checks
from usage_etl.invoicing.completeness import check_completeness
from usage_etl.invoicing.export import export_period
from usage_etl.invoicing.lines import usage_lines
from usage_etl.invoicing.price_book import load_price_book, parse_price_book
from usage_etl.invoicing.run import run_period
from usage_etl.invoicing.store import (
    FinalizedPeriodError,
    publish_lines,
    read_invoices,
    read_lines,
)
from usage_etl.landing import Landing
from usage_etl.periods import Period
from usage_etl.rollups.schema import object_key
from usage_etl.s3 import s3_client
from usage_etl.settings import SAMPLE_PRICE_BOOK

GIB = 2**30
OCT, NOV, DEC = Period.parse("2026-10"), Period.parse("2026-11"), Period.parse("2026-12")
BOOK = load_price_book(SAMPLE_PRICE_BOOK)
USAGE_COLUMNS = (
    "day", "account_id", "project_id", "region", "node_id", "direction", "operation",
    "artifact_kind", "network_path", "bytes", "request_count",
)  # fmt: skip
PUBLICATION_COLUMNS = (
    "day", "run_id", "published_at", "objects_loaded", "objects_quarantined", "objects_ignored",
    "rows_loaded", "rollups", "duplicates", "conflicts", "bytes", "request_count",
)  # fmt: skip
LEDGER_COLUMNS = (
    "day", "object_key", "etag", "size", "last_modified", "node_id", "hour", "format", "status",
    "reason", "rows_read", "rows_loaded", "rows_quarantined", "run_id", "recorded_at",
)  # fmt: skip


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_usage(wh, day, account, *, egress=0, ingress=0, private=0, requests=0):
    """Usage of one account on one day, in GiB (bytes) and requests."""
    rows = []
    for direction, path, gib, reqs in (
        ("egress", "public_internet", egress, requests),
        ("ingress", "unknown", ingress, 0),
        ("egress", "private_network", private, 0),
    ):
        if gib or reqs:
            rows.append(
                [day, account, "p1", "eu", "n1", direction, "download", "xcode", path,
                 int(gib * GIB), reqs]
            )  # fmt: skip
    wh.insert_rows("usage_daily", rows, USAGE_COLUMNS)


def publish_days(wh, days):
    now = datetime.now(UTC)
    rows = [[d, "ingest-run", now, 1, 0, 0, 1, 1, 0, 0, 0, 0] for d in days]
    wh.insert_rows("usage_day_publications", rows, PUBLICATION_COLUMNS)


def land_file(settings, day, name, body=b"PAR1 not really"):
    """Put a rollup object in the landing area; return (key, etag)."""
    key = object_key(settings.landing_prefix, day, 3, "n1", name)
    etag = s3_client().put_object(Bucket=settings.landing_bucket, Key=key, Body=body)["ETag"]
    return key, etag


def ingest_file(wh, day, key, etag):
    """What daily_usage records when it has read an object: its ledger entry."""
    now = datetime.now(UTC)
    wh.insert_rows(
        "ingest_objects",
        [[day, key, etag, 1, now, "n1", 3, "parquet", "loaded", "", 1, 1, 0, "r", now]],
        LEDGER_COLUMNS,
    )


def run(wh, settings, period, as_of, book=BOOK):
    s3 = s3_client()
    return run_period(
        wh,
        book,
        period,
        at(as_of),
        f"run-{uuid.uuid4().hex}",
        lambda: check_completeness(
            wh, Landing(s3, settings.landing_bucket, settings.landing_prefix), period
        ),
    )


def lines_by_key(wh, period):
    return {
        (r["account_id"], r["kind"], r["meter"], r["tier"], r["corrected_period_start"]): r
        for r in read_lines(wh, period)
    }


def snapshot(wh, period) -> bytes:
    """The period's lines exactly as ClickHouse returns them, every column."""
    return wh.client.raw_query(
        f"SELECT * FROM {wh.table('invoice_line_items')} WHERE period_start = "
        "{p:Date} ORDER BY line_id FORMAT TSV",
        parameters={"p": period.start},
    )


def october(wh):
    """beta (free): 25 GiB public egress + 5 GiB private (not billed), 3 GiB ingress, 150k
    requests. acme (pro): 150 GiB egress."""
    add_usage(wh, date(2026, 10, 3), "beta", egress=20, private=5, requests=100_000)
    add_usage(wh, date(2026, 10, 17), "beta", egress=5, ingress=3, requests=50_000)
    add_usage(wh, date(2026, 10, 31), "acme", egress=150)


def finalize_october(wh, settings):
    october(wh)
    publish_days(wh, OCT.days)
    outcome = run(wh, settings, OCT, "2026-11-04T00:00:00")
    assert outcome.status == "final" and not outcome.blockers
    return outcome


# -- drafts -----------------------------------------------------------------------------------


def test_open_month_gets_exact_draft_lines(warehouse, settings):
    october(warehouse)
    outcome = run(warehouse, settings, OCT, "2026-10-20T00:00:00")
    assert outcome.status == "draft" and outcome.written
    got = {
        (acct, meter, tier): (row["quantity"], row["amount"], row["status"])
        for (acct, kind, meter, tier, _), row in lines_by_key(warehouse, OCT).items()
    }
    assert got == {
        ("acme", "egress_bytes", 1): (Decimal(100), Decimal("5.00"), "draft"),
        ("acme", "egress_bytes", 2): (Decimal(50), Decimal("2.00"), "draft"),
        ("beta", "egress_bytes", 1): (Decimal(10), Decimal(0), "draft"),
        ("beta", "egress_bytes", 2): (Decimal(15), Decimal("1.35"), "draft"),
        ("beta", "ingress_bytes", 1): (Decimal(3), Decimal(0), "draft"),
        ("beta", "requests", 1): (Decimal(100), Decimal(0), "draft"),
        ("beta", "requests", 2): (Decimal(50), Decimal("0.20"), "draft"),
    }
    invoices = {i["account_id"]: i for i in read_invoices(warehouse, OCT)}
    assert {a: (i["subtotal"], i["status"]) for a, i in invoices.items()} == {
        "acme": (Decimal("7.00"), "draft"),
        "beta": (Decimal("1.55"), "draft"),
    }
    assert invoices["beta"]["finalized_at"] is None
    assert invoices["acme"]["period_end"] == date(2026, 11, 1)
    row = lines_by_key(warehouse, OCT)[("acme", "usage", "egress_bytes", 2, None)]
    assert (row["plan"], row["unit"], row["unit_price"]) == ("pro", "GiB", Decimal("0.04"))
    assert (row["price_book_version"], row["currency"]) == ("2026-10", "USD")


def test_reruns_leave_the_same_rows_apart_from_computed_at(warehouse, settings):
    october(warehouse)
    run(warehouse, settings, OCT, "2026-10-20T00:00:00")
    first = read_lines(warehouse, OCT)
    run(warehouse, settings, OCT, "2026-10-21T00:00:00")
    second = read_lines(warehouse, OCT)
    strip = [{k: v for k, v in r.items() if k != "computed_at"} for r in first]
    assert strip == [{k: v for k, v in r.items() if k != "computed_at"} for r in second]
    assert len(first) == len({r["line_id"] for r in first}) == 7
    # Both runs' build tables are gone from disk, not only marked dropped (drop_build_tables).
    assert not warehouse.query_one(
        "SELECT count() FROM system.dropped_tables WHERE database = {db:String}",
        {"db": warehouse.database},
    )


def test_late_usage_inside_the_grace_period_updates_the_draft(warehouse, settings):
    october(warehouse)
    run(warehouse, settings, OCT, "2026-10-20T00:00:00")
    before = lines_by_key(warehouse, OCT)
    add_usage(warehouse, date(2026, 10, 30), "beta", egress=10)
    outcome = run(warehouse, settings, OCT, "2026-11-03T23:59:59")  # due at 11-04 00:00
    after = lines_by_key(warehouse, OCT)
    key = ("beta", "usage", "egress_bytes", 2, None)
    assert outcome.status == "draft"
    assert (after[key]["quantity"], after[key]["amount"]) == (Decimal(25), Decimal("2.25"))
    assert after[key]["line_id"] == before[key]["line_id"]


def test_a_month_without_usage_has_no_lines(warehouse, settings):
    add_usage(warehouse, date(2026, 10, 3), "beta", egress=0, requests=0)
    outcome = run(warehouse, settings, OCT, "2026-10-20T00:00:00")
    assert outcome.lines == [] and read_lines(warehouse, OCT) == []
    assert read_invoices(warehouse, OCT) == []


# -- finalization -----------------------------------------------------------------------------


def test_finalization_waits_for_every_day_and_every_file(warehouse, settings):
    october(warehouse)
    key, etag = land_file(settings, date(2026, 10, 12), "a.parquet")
    ingest_file(warehouse, date(2026, 10, 12), key, etag)
    publish_days(
        warehouse, [d for d in OCT.days if d not in (date(2026, 10, 30), date(2026, 10, 31))]
    )
    # The 30th has no rollup object anywhere: nothing to bill, it does not block. The 31st has
    # a file but was never materialized: it blocks.
    never_run_key, _ = land_file(settings, date(2026, 10, 31), "never-run.parquet")
    late_key, late_etag = land_file(settings, date(2026, 10, 20), "late.ndjson.gz")
    land_file(settings, date(2026, 10, 20), "_SUCCESS", b"")  # not a rollup: ignored

    outcome = run(warehouse, settings, OCT, "2026-11-04T00:00:00")
    assert outcome.status == "draft" and len(outcome.blockers) == 1
    assert "2026-10-20, 2026-10-31" in outcome.blockers[0]
    assert outcome.completeness.late_objects == {
        date(2026, 10, 20): [late_key],
        date(2026, 10, 31): [never_run_key],
    }
    assert outcome.completeness.unpublished_days == [date(2026, 10, 31)]
    assert {r["status"] for r in read_lines(warehouse, OCT)} == {"draft"}

    # daily_usage re-runs the 20th: it reads the late file, but dies before publishing.
    ingest_file(warehouse, date(2026, 10, 20), late_key, late_etag)
    never_run = land_file(settings, date(2026, 10, 31), "never-run.parquet")
    ingest_file(warehouse, date(2026, 10, 31), *never_run)
    publish_days(warehouse, [date(2026, 10, 31)])
    outcome = run(warehouse, settings, OCT, "2026-11-04T00:00:00")
    assert outcome.completeness.stale_days == [date(2026, 10, 20)]
    assert outcome.status == "draft" and "2026-10-20" in outcome.blockers[0]

    publish_days(warehouse, [date(2026, 10, 20)])  # its retry publishes the day
    land_file(settings, date(2026, 10, 12), "a.parquet", b"PAR1 corrected")  # overwritten
    outcome = run(warehouse, settings, OCT, "2026-11-04T00:00:00")
    assert outcome.status == "draft" and outcome.completeness.incomplete_days == [
        date(2026, 10, 12)
    ]

    key, etag = land_file(settings, date(2026, 10, 12), "a.parquet", b"PAR1 corrected")
    ingest_file(warehouse, date(2026, 10, 12), key, etag)
    publish_days(warehouse, [date(2026, 10, 12)])
    outcome = run(warehouse, settings, OCT, "2026-11-04T00:00:00")
    assert outcome.status == "final" and not outcome.blockers
    invoices = read_invoices(warehouse, OCT)
    assert {i["status"] for i in invoices} == {"final"}
    assert all(i["finalized_at"] is not None for i in invoices)


def test_periods_finalize_in_order(warehouse, settings):
    october(warehouse)
    add_usage(warehouse, date(2026, 11, 2), "beta", egress=1)
    publish_days(warehouse, OCT.days + NOV.days)
    outcome = run(warehouse, settings, NOV, "2026-12-10T00:00:00")
    assert outcome.status == "draft"
    assert "2026-10" in outcome.blockers[0] and "finalize them first" in outcome.blockers[0]
    assert run(warehouse, settings, OCT, "2026-12-10T00:00:00").status == "final"
    assert run(warehouse, settings, NOV, "2026-12-10T00:00:00").status == "final"


def test_a_final_period_is_never_rewritten(warehouse, settings):
    finalize_october(warehouse, settings)
    before = snapshot(warehouse, OCT)
    add_usage(warehouse, date(2026, 10, 15), "beta", egress=7)  # late usage after final

    again = run(warehouse, settings, OCT, "2026-12-01T00:00:00")
    assert (again.written, again.status, again.checksum_ok) == (False, "final", True)
    assert snapshot(warehouse, OCT) == before

    # Even code that bypasses the run cannot overwrite it.
    redo = usage_lines(OCT, {"beta": {"egress_bytes": 1}}, BOOK)
    with pytest.raises(FinalizedPeriodError, match="2026-10 is final"):
        publish_lines(warehouse, OCT, redo, "sneaky-run")
    assert snapshot(warehouse, OCT) == before
    assert checks.final_unchanged(warehouse, OCT).passed
    # The late usage is not billed yet: conservation says so and says what to run.
    outcome = checks.conservation(warehouse, OCT)
    assert not outcome.passed and "monthly_invoices for 2026-11" in outcome.action


def test_tampered_final_lines_are_detected(warehouse, settings):
    finalize_october(warehouse, settings)
    warehouse.command(
        f"ALTER TABLE {warehouse.table('invoice_line_items')} UPDATE amount = amount + 1 "
        "WHERE account_id = 'acme'",
        mutations_sync=1,
    )
    assert not checks.final_unchanged(warehouse, OCT).passed
    assert run(warehouse, settings, OCT, "2026-12-01T00:00:00").checksum_ok is False


# -- adjustments ------------------------------------------------------------------------------


def test_late_usage_after_finalization_is_adjusted_on_the_next_draft(warehouse, settings):
    finalize_october(warehouse, settings)
    october_bytes = snapshot(warehouse, OCT)
    add_usage(warehouse, date(2026, 11, 5), "beta", egress=12)
    # Late October usage: beta +10 GiB egress; gamma (no November usage) 30 GiB.
    add_usage(warehouse, date(2026, 10, 15), "beta", egress=10)
    add_usage(warehouse, date(2026, 10, 16), "gamma", egress=30)

    outcome = run(warehouse, settings, NOV, "2026-11-10T00:00:00")
    assert outcome.status == "draft"
    nov = lines_by_key(warehouse, NOV)
    assert {k: (r["quantity"], r["amount"]) for k, r in nov.items() if k[1] == "adjustment"} == {
        ("beta", "adjustment", "egress_bytes", 2, OCT.start): (Decimal(10), Decimal("0.90")),
        ("gamma", "adjustment", "egress_bytes", 1, OCT.start): (Decimal(10), Decimal(0)),
        ("gamma", "adjustment", "egress_bytes", 2, OCT.start): (Decimal(20), Decimal("1.80")),
    }
    assert nov[("beta", "usage", "egress_bytes", 2, None)]["quantity"] == Decimal(2)
    invoices = {i["account_id"]: i for i in read_invoices(warehouse, NOV)}
    assert invoices["gamma"]["subtotal"] == Decimal("1.80")  # created for the adjustment
    assert invoices["beta"]["subtotal"] == Decimal("0.18") + Decimal("0.90")
    assert snapshot(warehouse, OCT) == october_bytes
    for period in (OCT, NOV):
        assert checks.conservation(warehouse, period).passed
        assert checks.subtotals(warehouse, period).passed
        assert checks.usage_amounts(warehouse, period).passed

    # November becomes final with its adjustments; more late October usage is then billed on
    # December, for the new difference only.
    publish_days(warehouse, NOV.days)
    assert run(warehouse, settings, NOV, "2026-12-04T00:00:00").status == "final"
    add_usage(warehouse, date(2026, 10, 20), "beta", egress=5)
    run(warehouse, settings, DEC, "2026-12-05T00:00:00")
    dec = lines_by_key(warehouse, DEC)
    assert {k: (r["quantity"], r["amount"]) for k, r in dec.items()} == {
        ("beta", "adjustment", "egress_bytes", 2, OCT.start): (Decimal(5), Decimal("0.45")),
    }
    assert snapshot(warehouse, OCT) == october_bytes
    assert checks.conservation(warehouse, OCT).passed


def test_adjustments_reprice_with_the_book_the_period_was_finalized_with(warehouse, settings):
    finalize_october(warehouse, settings)
    data = yaml.safe_load(SAMPLE_PRICE_BOOK.read_text())
    new = copy.deepcopy(data)
    new["version"] = "2026-11"
    new["plans"]["free"]["egress_bytes"]["tiers"][1]["unit_price"] = "0.50"
    add_usage(warehouse, date(2026, 10, 15), "beta", egress=10)
    add_usage(warehouse, date(2026, 11, 2), "beta", egress=11)
    run(warehouse, settings, NOV, "2026-11-10T00:00:00", book=parse_price_book(new))
    nov = lines_by_key(warehouse, NOV)
    adjustment = nov[("beta", "adjustment", "egress_bytes", 2, OCT.start)]
    usage = nov[("beta", "usage", "egress_bytes", 2, None)]
    assert (adjustment["unit_price"], adjustment["amount"]) == (Decimal("0.09"), Decimal("0.90"))
    assert adjustment["price_book_version"] == "2026-10"
    assert (usage["unit_price"], usage["amount"], usage["price_book_version"]) == (
        Decimal("0.5"),
        Decimal("0.50"),
        "2026-11",
    )


def test_only_the_first_open_period_carries_adjustments(warehouse, settings):
    finalize_october(warehouse, settings)
    add_usage(warehouse, date(2026, 10, 15), "beta", egress=10)
    add_usage(warehouse, date(2026, 12, 2), "beta", egress=11)
    run(warehouse, settings, DEC, "2026-12-10T00:00:00")
    assert {r["kind"] for r in read_lines(warehouse, DEC)} == {"usage"}


# -- export -----------------------------------------------------------------------------------


def test_export_writes_csv_parquet_and_a_checksum_manifest(warehouse, settings):
    finalize_october(warehouse, settings)
    lines, invoices = read_lines(warehouse, OCT), read_invoices(warehouse, OCT)
    result = export_period(
        s3_client(), settings.landing_bucket, settings.landing_prefix, OCT, lines, invoices
    )
    s3 = s3_client()
    prefix = settings.landing_prefix.rsplit("/", 1)[0] + "/exports/invoices/period=2026-10/"
    assert result.prefix == prefix
    manifest = json.loads(
        s3.get_object(Bucket=settings.landing_bucket, Key=prefix + "manifest.json")["Body"].read()
    )
    assert set(manifest["files"]) == {
        "invoice_line_items.csv", "invoice_line_items.parquet", "invoices.csv",
        "invoices.parquet",
    }  # fmt: skip
    bodies = {}
    for name, entry in manifest["files"].items():
        body = s3.get_object(Bucket=settings.landing_bucket, Key=prefix + name)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        bodies[name] = body
    table = pq.read_table(io.BytesIO(bodies["invoice_line_items.parquet"]))
    assert table.num_rows == manifest["files"]["invoice_line_items.parquet"]["rows"] == 7
    assert str(table.schema.field("amount").type) == "decimal128(18, 2)"
    assert sum(table.column("amount").to_pylist()) == Decimal("8.55")
    rows = list(csv.DictReader(io.StringIO(bodies["invoices.csv"].decode())))
    assert {r["account_id"]: (r["subtotal"], r["status"]) for r in rows} == {
        "acme": ("7.00", "final"),
        "beta": ("1.55", "final"),
    }


def test_checks_catch_broken_subtotals_and_negative_usage_lines(warehouse, settings):
    october(warehouse)
    run(warehouse, settings, OCT, "2026-10-20T00:00:00")
    assert checks.subtotals(warehouse, OCT).passed and checks.usage_amounts(warehouse, OCT).passed
    lines = warehouse.table("invoice_line_items")
    warehouse.command(
        f"CREATE OR REPLACE VIEW {warehouse.table('invoices')} AS SELECT invoice_id, account_id, "
        "period_start, any(period_end) AS period_end, any(currency) AS currency, "
        "CAST(sum(amount) + 0.01 AS Decimal(18, 2)) AS subtotal, 'draft' AS status, "
        f"CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS finalized_at FROM {lines} "
        "GROUP BY invoice_id, account_id, period_start"
    )
    broken = checks.subtotals(warehouse, OCT)
    assert not broken.passed and len(broken.details) == 2
    warehouse.command(
        f"ALTER TABLE {lines} UPDATE amount = -amount WHERE account_id = 'acme' AND tier = 2",
        mutations_sync=1,
    )
    negative = checks.usage_amounts(warehouse, OCT)
    assert not negative.passed and negative.details == [
        "acme egress_bytes tier 2: quantity 50.000000000 amount -2.00"
    ]
