"""The monthly_invoices job as an operator runs it: definitions' own resources, configured
through the environment (contract §6), on real chDB and SeaweedFS."""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
from test_invoices import OCT, add_usage, land_file, publish_days

from usage_etl.definitions import defs
from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.s3 import s3_client


def execute(partition: str) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("monthly_invoices")
    return job.execute_in_process(
        partition_key=partition, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def test_job_finalizes_a_complete_month_checks_and_exports_it(warehouse, settings, monkeypatch):
    add_usage(warehouse, date(2026, 10, 3), "beta", egress=25, requests=150_000)
    add_usage(warehouse, date(2026, 10, 31), "acme", egress=150)
    publish_days(warehouse, OCT.days)
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-11-04T00:00:00Z")

    result = execute("2026-10-01")
    assert result.success
    lines_meta = result.asset_materializations_for_node("invoice_period")[0].metadata
    assert lines_meta["status"].value == "final" and lines_meta["lines"].value == 6
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "quantities_conserved", "usage_lines_positive", "final_lines_unchanged",
        "subtotal_equals_lines", "credits_within_grants", "meters_disjoint",
    }  # fmt: skip
    assert all(e.passed for e in evaluations)
    assert {i["status"] for i in read_invoices(warehouse, OCT)} == {"final"}

    prefix = settings.landing_prefix.rsplit("/", 1)[0] + "/exports/invoices/period=2026-10/"
    body = s3_client().get_object(Bucket=settings.landing_bucket, Key=prefix + "manifest.json")
    manifest = json.loads(body["Body"].read())
    assert manifest["status"] == "final"
    assert manifest["files"]["invoice_line_items.csv"]["rows"] == 6


def test_job_fails_an_incomplete_due_month_and_keeps_the_draft(warehouse, settings, monkeypatch):
    add_usage(warehouse, date(2026, 10, 3), "beta", egress=25)
    publish_days(warehouse, [d for d in OCT.days if d.day not in (9, 10)])
    for day in (9, 10):  # rollup files exist for the two days no run has materialized
        land_file(settings, date(2026, 10, day), "unread.parquet")
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-11-04T00:00:00Z")

    result = execute("2026-10-01")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "2026-10-09, 2026-10-10" in message and "daily_usage" in message
    assert {r["status"] for r in read_lines(warehouse, OCT)} == {"draft"}


def test_credits_within_grants_catches_months_invoiced_out_of_order(
    warehouse, settings, tmp_path, monkeypatch
):
    """November invoiced before October: each month's 50.00 fee takes 50.00 of the 60.00
    grant (October has no earlier stored invoice to count), 100.00 in all. The separate
    ERROR check names the grant and says to re-run the drafts in order."""
    book = tmp_path / "book.yaml"
    book.write_text(
        'version: "t"\ncurrency: USD\ngrace_days: 3\ndefault_plan: free\n'
        'plans:\n  free: {}\n  pro: {fixed_fee: "50.00"}\naccounts:\n  acme: pro\n'
        "credits:\n"
        '  - {id: g1, account: acme, amount: "60.00", from: 2026-10-01, until: 2027-10-01}\n'
    )
    monkeypatch.setenv("USAGE_ETL_PRICE_BOOK", str(book))
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-10-20T00:00:00Z")
    assert execute("2026-11-01").success
    result = execute("2026-10-01")
    assert result.success  # the check is not blocking: the drafts stay for the operator
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "credits_within_grants"
    )
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "g1: consumed 100.00 of a 60.00 grant" in evaluation.metadata["examples"].value
    assert "in order" in evaluation.metadata["what_to_do"].value
