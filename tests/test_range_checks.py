"""The checks of a range run read all its days at once (usage/audit_days.py, the range
functions of reconciliation/compare.py): each day's result must be exactly the one-day
function's, and a range run still reports one result per day per check, naming the failing
day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from rollup_files import Landing, ndjson_gz_bytes, parquet_bytes, rollup
from test_daily_usage_range import _evaluations, _failure_message, run_range

from usage_etl.reconciliation.compare import (
    node_hour_coverage,
    node_hour_coverages,
    reconcile,
    reconcile_days,
)
from usage_etl.settings import Tolerances
from usage_etl.usage import audit, audit_days

FIRST = date(2026, 10, 4)
DAYS = [FIRST + timedelta(days=i) for i in range(4)]
CLEAN, QUARANTINED, CONFLICTING, EMPTY = DAYS


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _deliver(landing: Landing, warehouse) -> None:
    """A clean day, a day with quarantined rows, a file and a group held back by the publish, a
    day with a conflicting version, and a day with nothing delivered; cache events on two."""
    for day in (CLEAN, QUARANTINED, CONFLICTING):
        rows = [
            rollup(f"{day}-e{i}", day=day, minute=i, window_seconds=60, bytes=100 * (i + 1))
            for i in range(3)
        ]
        landing.put("a.parquet", parquet_bytes(rows), day=day)
    landing.put(
        "bad-rows.ndjson.gz",
        ndjson_gz_bytes(
            [rollup("q-ok", day=QUARANTINED, bytes=7), rollup("neg", day=QUARANTINED, bytes=-1)],
            raw_lines=(b"{not json",),
        ),
        day=QUARANTINED,
        hour=5,
    )
    landing.put("broken.parquet", b"PAR1 not really", day=QUARANTINED, hour=7)
    # A group summing beyond UInt64: the publication holds it back (quarantine by the publish).
    over = [
        rollup(f"o{i}", day=QUARANTINED, hour=9, bytes=2**63 - 1, account_id="greedy", minute=i)
        for i in range(3)
    ]
    landing.put("over.parquet", parquet_bytes(over), day=QUARANTINED, hour=9)
    # Same event_id and emitted_at, other content: a conflict on CONFLICTING only.
    other = rollup(f"{CONFLICTING}-e0", day=CONFLICTING, window_seconds=60, bytes=999)
    landing.put("b.parquet", parquet_bytes([other]), day=CONFLICTING)
    events = [
        (f"c-{day}-{i}", datetime(day.year, day.month, day.day, i, tzinfo=UTC), size)
        for day, sizes in ((CLEAN, (100, 200, 300)), (CONFLICTING, (50, 50)))
        for i, size in enumerate(sizes)
    ]
    warehouse.insert_rows(
        "cache_events",
        [(e, at, "acct-1", "proj-1", "xcode", "download", size) for e, at, size in events],
        ["event_id", "occurred_at", "account_id", "project_id", "artifact_kind", "action",
         "size_bytes"],
    )  # fmt: skip


def test_range_audits_equal_the_one_day_audits(landing, warehouse):
    _deliver(landing, warehouse)
    result = run_range(DAYS[0], DAYS[-1])
    assert result.success, _failure_message(result)

    quarantine = audit_days.quarantine_summaries(warehouse, DAYS)
    conflicts = audit_days.conflicts_by_day(warehouse, DAYS)
    tolerances = Tolerances()
    reconciliations = reconcile_days(warehouse, DAYS, tolerances, "cache_events")
    coverages = node_hour_coverages(warehouse, DAYS)
    for found in (quarantine, conflicts, reconciliations, coverages):
        assert list(found) == DAYS
    for day in DAYS:
        assert quarantine[day] == audit.quarantine_summary(warehouse, day), day
        assert conflicts[day] == audit.conflicts(warehouse, day), day
        assert reconciliations[day] == reconcile(warehouse, day, tolerances, "cache_events"), day
        assert coverages[day] == node_hour_coverage(warehouse, day), day
    # The data is not trivial: each audit finds something on some day and nothing on others.
    assert quarantine[QUARANTINED].by_rule["group_sum_overflow"] == 3
    assert quarantine[QUARANTINED].files
    assert quarantine[QUARANTINED].samples
    assert not quarantine[CLEAN].by_rule and not quarantine[EMPTY].by_rule
    assert conflicts[CONFLICTING].count == 1 and conflicts[CLEAN].count == 0
    assert reconciliations[CLEAN].cache_bytes == reconciliations[CLEAN].rollup_bytes == 600
    assert reconciliations[CONFLICTING].cache_bytes == 100
    assert reconciliations[EMPTY].groups == 0
    assert coverages[CLEAN].nodes == 1 and coverages[CLEAN].missing_node_hours == 23
    assert coverages[EMPTY].nodes == 0


def test_a_range_run_reports_each_check_once_per_day_and_names_the_failing_day(landing, warehouse):
    _deliver(landing, warehouse)
    result = run_range(DAYS[0], DAYS[-1])
    assert result.success, _failure_message(result)

    evaluations = result.get_asset_check_evaluations()
    keys = [d.isoformat() for d in DAYS]
    names = {
        "usage_daily_is_exact", "quarantine_report", "conflict_report",
        "rollups_cover_cache_events", "node_hours_complete",
    }  # fmt: skip
    assert sorted((e.check_name, e.partition) for e in evaluations) == sorted(
        (n, k) for n in names for k in keys
    )
    checks = _evaluations(result)
    assert [checks[("quarantine_report", k)] for k in keys] == [True, False, True, True]
    assert [checks[("conflict_report", k)] for k in keys] == [True, True, False, True]
    assert all(checks[("usage_daily_is_exact", k)] for k in keys)
    by_key = {(e.check_name, e.partition): e for e in evaluations}
    conflict = by_key[("conflict_report", CONFLICTING.isoformat())]
    assert str(CONFLICTING) in conflict.description
    assert conflict.metadata["conflicts"].value == 1
    assert conflict.metadata["day"].value == CONFLICTING.isoformat()
    quarantined = by_key[("quarantine_report", QUARANTINED.isoformat())]
    assert str(QUARANTINED) in quarantined.description
    assert quarantined.metadata["quarantined_by_rule"].value == dict(
        audit.quarantine_summary(warehouse, QUARANTINED).by_rule
    )
    # Severities as for a one-day run: the exactness check is blocking ERROR, the reports WARN.
    assert {e.severity.value for e in evaluations if e.check_name == "conflict_report"} == {"WARN"}
    assert {e.blocking for e in evaluations if e.check_name == "usage_daily_is_exact"} == {True}
