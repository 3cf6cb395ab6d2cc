"""The exactness check (`audit.recompute_day`) recomputes the day by its own algorithm and fails
on a publish that billed the wrong version, lost a rollup or changed a sum."""

from __future__ import annotations

from datetime import date

import pytest
from rollup_files import Landing, parquet_bytes, rollup, run_daily

from usage_etl.usage import audit

DAY = "2026-10-05"


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _shift(warehouse, table: str, column: str, delta: int, account: str) -> None:
    """Add `delta` to `column` of the day's rows of one account (a corrupted publish)."""
    warehouse.command(
        f"ALTER TABLE {warehouse.table(table)} UPDATE {column} = {column} + {{delta:Int64}} "
        "WHERE day = {day:Date} AND account_id = {account:String}",
        {"delta": delta, "day": date.fromisoformat(DAY), "account": account},
        mutations_sync=2,
    )


def test_the_recomputation_fails_on_a_wrongly_billed_version(landing, warehouse):
    # acct-1: a corrected version (later emitted_at, other bytes) and an identical re-delivery.
    # acct-2: a conflict (same emitted_at, different bytes): the greater content hash wins.
    # acct-3: versions with the same emitted_at and values but another project (decided by
    # values alone). acct-4: single versions.
    first = [
        rollup("c1", account_id="acct-1", bytes=500, request_count=5),
        rollup("c2", account_id="acct-1", bytes=70, request_count=7),
        rollup("k1", account_id="acct-2", bytes=100, request_count=1),
        rollup("p1", account_id="acct-3", project_id="proj-a", bytes=40, request_count=4),
        rollup("s1", account_id="acct-4", bytes=3, request_count=1),
        rollup("s2", account_id="acct-4", bytes=5, request_count=2),
    ]
    second = [
        rollup("c1", account_id="acct-1", bytes=700, request_count=9, emitted_minute=30),
        rollup("c2", account_id="acct-1", bytes=70, request_count=7),
        rollup("k1", account_id="acct-2", bytes=900, request_count=2),
        rollup("p1", account_id="acct-3", project_id="proj-b", bytes=40, request_count=4),
    ]
    landing.put("a.parquet", parquet_bytes(first))
    landing.put("b.parquet", parquet_bytes(second))
    result = run_daily(DAY)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["usage_daily_is_exact"]

    day = date.fromisoformat(DAY)
    exact = audit.recompute_day(warehouse, day)
    assert exact.matches
    billed_k1 = exact.recomputed[0] - (700 + 70 + 40 + 3 + 5)
    assert billed_k1 in (100, 900)  # the conflict's winner, whichever hash is greater
    requests_k1 = 2 if billed_k1 == 900 else 1
    assert exact.recomputed == (818 + billed_k1, 9 + 7 + 4 + 1 + 2 + requests_k1, 6)
    # Its work table (the repeated hashes) is gone, not left behind nor marked dropped.
    left = warehouse.query_rows(
        "SELECT name FROM system.tables WHERE name LIKE '%audit%' "
        "UNION ALL SELECT table FROM system.dropped_tables WHERE table LIKE '%audit%'"
    )
    assert left == []

    # The conflict's loser billed instead of its winner.
    loser = 1000 - billed_k1
    corruptions = [
        ("usage_daily", "bytes", loser - billed_k1, "acct-2"),
        ("usage_daily", "bytes", 500 - 700, "acct-1"),  # the corrected event's old version
        ("usage_daily", "request_count", 1, "acct-4"),
        ("usage_hourly", "rollups", -1, "acct-4"),  # a rollup lost
    ]
    for table, column, delta, account in corruptions:
        _shift(warehouse, table, column, delta, account)
        assert not audit.recompute_day(warehouse, day).matches, (table, column, account)
        _shift(warehouse, table, column, -delta, account)
        assert audit.recompute_day(warehouse, day).matches
