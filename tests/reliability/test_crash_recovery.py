"""SIGKILL a real `dagster job execute` at each dangerous moment; the re-run must be exact.

Each test publishes a day (or drafts a month) first, delivers more, then kills a run at one
named fault point (`usage_etl/crash_points.py`) with the signal a lost node or the OOM killer sends:
no `finally`, no cleanup. Then: readers still see the previous complete version (or the new
complete one), never half; the re-run publishes exactly what the contract oracles compute.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

import pytest
from reliability_harness import (
    DAY,
    count_rows,
    daily_table,
    expected_charges,
    expected_daily,
    first_delivery,
    hourly_rolled_up,
    late_delivery,
    run_job,
    stored_charges,
    upload,
    valid_rows,
)

from usage_etl.invoicing.completeness import stale_days
from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.periods import Period

OCT = Period.containing(DAY)
DRAFT_AS_OF = "2026-10-20T00:00:00Z"
FINAL_AS_OF = "2026-11-05T00:00:00Z"
# Small insert batches so the late delivery is written in several batches (crash between them).
SMALL_BATCHES = {
    "USAGE_ETL_INGEST_BATCH_ROWS": "20",
    "USAGE_ETL_NATIVE_CHUNK_ROWS": "20",
    "USAGE_ETL_NATIVE_CHUNK_BYTES": "2000",
}


def _killed(result) -> None:
    assert result.returncode == -signal.SIGKILL, (
        f"the run was expected to die at its fault point, exit {result.returncode}:\n"
        f"{result.stderr[-3000:]}"
    )


def _exactness_check_passed(result) -> bool:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}[
        "usage_daily_is_exact"
    ]


def _late_keys_in_ledger(warehouse) -> int:
    return count_rows(warehouse, "ingest_objects", "position(object_key, '/B-') > 0")


DAILY_POINTS = [
    "ingest.listed",
    "ingest.fetched_one",
    "ingest.batch_flushed",
    "ingest.before_ledger",
    "publish.before_swap",
    "publish.before_record",
]
SOAK_SEEDS = [3, 4, 5]


@pytest.mark.parametrize("point", DAILY_POINTS)
def test_daily_run_killed_mid_flight_then_rerun_is_exact(point, pipeline, landing):
    _kill_daily_run_and_rerun(point, pipeline, landing, seed=1, rows_per_file=8)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SOAK_SEEDS)
@pytest.mark.parametrize("point", DAILY_POINTS)
def test_daily_run_killed_soak(point, seed, pipeline, landing):
    """More and larger late files (dozens of insert batches), several seeds."""
    _kill_daily_run_and_rerun(point, pipeline, landing, seed=seed, rows_per_file=120)


def _kill_daily_run_and_rerun(point, pipeline, landing, seed: int, rows_per_file: int) -> None:
    first = first_delivery(seed=seed)
    upload(landing, first)
    assert run_job("daily_usage", DAY.isoformat()).success
    late = late_delivery(first, seed=seed + 100, rows_per_file=rows_per_file)
    upload(landing, late)
    before = expected_daily(valid_rows(first))
    after = expected_daily(valid_rows(first + late))
    assert before != after

    _killed(pipeline.cli("daily_usage", DAY.isoformat(), fault=point, env=SMALL_BATCHES))

    with pipeline.open() as warehouse:
        published = daily_table(warehouse)
        # Readers see one complete version of the day: the old one until the swap.
        assert published == (after if point == "publish.before_record" else before)
        assert hourly_rolled_up(warehouse) == published
        assert count_rows(warehouse, "usage_day_publications") == 1
        decided = _late_keys_in_ledger(warehouse)
        if point in ("ingest.listed", "ingest.fetched_one", "ingest.before_ledger"):
            assert decided == 0  # staged rows without a ledger entry count for nobody
        elif point == "ingest.batch_flushed":
            assert 0 < decided < len(late)  # really killed between batches
        else:
            assert decided == len(late)
        if point == "publish.before_record":
            # Published but not recorded: invoicing must not treat the day as complete.
            assert stale_days(warehouse, OCT) == [DAY]

    rerun = run_job("daily_usage", DAY.isoformat())

    assert rerun.success
    assert _exactness_check_passed(rerun)
    with pipeline.open() as warehouse:
        assert daily_table(warehouse) == after
        assert hourly_rolled_up(warehouse) == after
        assert stale_days(warehouse, OCT) == []
        # Each late object is decided once more at most (the killed run's decisions stand).
        assert _late_keys_in_ledger(warehouse) == len(late)


def _publish_october(warehouse) -> None:
    """Mark every other day of October published (no files landed on them)."""
    now = datetime.now(UTC)
    rows = [
        [d, "backfill", now + timedelta(seconds=1), 0, 0, 0, 0, 0, 0, 0, 0, 0]
        for d in OCT.days
        if d != DAY
    ]
    warehouse.insert_rows(
        "usage_day_publications", rows,
        ["day", "run_id", "published_at", "objects_loaded", "objects_quarantined",
         "objects_ignored", "rows_loaded", "rollups", "duplicates", "conflicts", "bytes",
         "request_count"],
    )  # fmt: skip


def _invoices_consistent(warehouse) -> list[dict]:
    lines = read_lines(warehouse, OCT)
    invoices = read_invoices(warehouse, OCT)
    by_invoice: dict[str, object] = {}
    for line in lines:
        by_invoice[line["invoice_id"]] = by_invoice.get(line["invoice_id"], 0) + line["amount"]
    assert {i["invoice_id"]: i["subtotal"] for i in invoices} == by_invoice
    assert len({line["line_id"] for line in lines}) == len(lines)
    return lines


@pytest.mark.parametrize(
    "point",
    # Both points are safe; CI runs the riskier one (final lines already visible).
    [pytest.param("invoices.before_swap", marks=pytest.mark.slow), "invoices.before_record"],
)
def test_invoice_finalization_killed_mid_publish_then_rerun_is_exact(
    point, pipeline, landing, monkeypatch
):
    first = first_delivery()
    upload(landing, first)
    assert run_job("daily_usage", DAY.isoformat()).success
    with pipeline.open() as warehouse:
        _publish_october(warehouse)
    expected = expected_charges(expected_daily(valid_rows(first)))
    monkeypatch.setenv("USAGE_ETL_AS_OF", DRAFT_AS_OF)
    assert run_job("monthly_invoices", "2026-10-01").success
    with pipeline.open() as warehouse:
        draft = _invoices_consistent(warehouse)
    assert {line["status"] for line in draft} == {"draft"}

    monkeypatch.setenv("USAGE_ETL_AS_OF", FINAL_AS_OF)
    _killed(pipeline.cli("monthly_invoices", "2026-10-01", fault=point))

    with pipeline.open() as warehouse:
        lines = _invoices_consistent(warehouse)
        final_records = count_rows(warehouse, "invoice_periods", "status = 'final'")
    assert final_records == 0
    if point == "invoices.before_swap":
        assert lines == draft  # the previous complete version, untouched
    else:
        assert {line["status"] for line in lines} == {"final"}
        assert stored_charges(lines) == expected

    rerun = run_job("monthly_invoices", "2026-10-01")
    again = run_job("monthly_invoices", "2026-10-01")

    assert rerun.success and again.success
    with pipeline.open() as warehouse:
        lines = _invoices_consistent(warehouse)
        assert count_rows(warehouse, "invoice_periods", "status = 'final'") == 1
    assert {line["status"] for line in lines} == {"final"}
    assert stored_charges(lines) == expected
    again_meta = again.asset_materializations_for_node("invoice_period")[0].metadata
    assert again_meta["written"].value is False  # final lines are never rewritten
