"""No tenant's data fails another's day: sums that cannot fit UInt64.

Rows with bytes < 2^63 are valid (contract §1) and must load. Day totals are summary figures
(UInt128 / Python int) and never fail the day. A usage_daily group whose exact sum would not
fit UInt64 is not published: its winning rows are quarantined as `group_sum_overflow`, and every
other group of the day publishes exactly. Real SeaweedFS + chDB, through the daily_usage job.
"""

from __future__ import annotations

from datetime import date

import pytest
from rollup_files import Landing, ndjson_gz_bytes, parquet_bytes, rollup, run_daily, usage_rows

DAY = "2026-10-05"
BIG = 2**63 - 1


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _daily(warehouse) -> dict[str, tuple[int, int]]:
    return {
        account: (b, r)
        for account, b, r in warehouse.query_rows(
            f"SELECT account_id, sum(toUInt128(bytes)), sum(toUInt128(request_count)) "
            f"FROM {warehouse.table('usage_daily')} WHERE day = {{day:Date}} GROUP BY account_id",
            {"day": DAY},
        )
    }


def _publication(warehouse) -> tuple[int, int]:
    return tuple(
        warehouse.query_rows(
            f"SELECT argMax(bytes, published_at), argMax(request_count, published_at) "
            f"FROM {warehouse.table('usage_day_publications')} WHERE day = {{day:Date}}",
            {"day": DAY},
        )[0]
    )


def test_a_row_of_2_63_minus_1_alone_loads_and_publishes(landing, warehouse):
    landing.put("a.parquet", parquet_bytes([rollup("big", bytes=BIG, request_count=BIG)]))
    result = run_daily(DAY)
    assert result.success and _checks(result)["usage_daily_is_exact"]
    assert usage_rows(warehouse)[0][-2:] == (BIG, BIG)


def test_valid_rows_whose_day_total_exceeds_uint64_all_publish_exactly(landing, warehouse):
    # Two groups of one row each, and one group of two rows summing to 2^64 - 2 (fits).
    apart = [rollup("a1", bytes=BIG, account_id="a"), rollup("b1", bytes=BIG, account_id="b")]
    landing.put("a.parquet", parquet_bytes(apart))
    landing.put(
        "c.ndjson.gz",
        ndjson_gz_bytes([
            rollup("c1", bytes=BIG, request_count=BIG, account_id="c"),
            rollup("c2", bytes=BIG, request_count=BIG, account_id="c", minute=5),
        ]),
    )  # fmt: skip
    result = run_daily(DAY)

    assert result.success
    checks = _checks(result)
    assert checks["usage_daily_is_exact"] and checks["quarantine_report"]
    assert _daily(warehouse) == {"a": (BIG, 10), "b": (BIG, 10), "c": (2 * BIG, 2 * BIG)}
    assert _publication(warehouse) == (4 * BIG, 20 + 2 * BIG)
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("published_usage")
    }["usage_daily"]
    assert meta["bytes"].value == 4 * BIG and meta["groups_overflowed"].value == 0


def _quarantined(warehouse) -> list[tuple]:
    return warehouse.query_rows(
        f"SELECT splitByChar('/', source_key)[-1], source_row, toString(rule), field, value, "
        f"detail FROM {warehouse.table('quarantined_rows')} WHERE rule = 'group_sum_overflow' "
        "ORDER BY ALL"
    )


# One account bucket, and (9 counting rows, 1 per bucket) as many buckets as rows: the two
# overflowing groups then lie in two buckets, the first of which creates the overflow table.
@pytest.mark.parametrize("bucket_rows", [None, 1], ids=["one_bucket", "many_buckets"])
def test_a_group_whose_sum_exceeds_uint64_is_quarantined_and_the_rest_publishes(
    landing, warehouse, monkeypatch, bucket_rows
):
    from usage_etl.usage import publish

    overflowing_buckets = []
    if bucket_rows:
        monkeypatch.setattr(publish, "GROUP_BUCKET_ROWS", bucket_rows)
        spell_out = publish._spell_out

        def spy(*args, **kwargs):
            overflowed = spell_out(*args, **kwargs)
            overflowing_buckets.append(overflowed)
            return overflowed

        monkeypatch.setattr(publish, "_spell_out", spy)
    over = [rollup(f"o{i}", bytes=BIG, account_id="greedy", minute=i) for i in range(3)]
    # A second version of o0, older: it does not count and is not quarantined.
    older = rollup("o0", bytes=5, account_id="greedy", emitted_minute=1)
    # Requests overflow in another group (bytes are small there).
    requests = [rollup(f"r{i}", request_count=BIG, account_id="chatty", minute=i) for i in range(3)]
    fine = [rollup("f1", bytes=BIG, account_id="fine"), rollup("f2", bytes=7, account_id="small")]
    landing.put("over.parquet", parquet_bytes(over))
    landing.put("older.parquet", parquet_bytes([older]))
    landing.put("mixed.ndjson.gz", ndjson_gz_bytes([*requests, *fine]))

    first = run_daily(DAY)

    assert first.success
    if bucket_rows:  # the case this variant is for: the groups overflowed in two buckets
        assert overflowing_buckets.count(True) == 2
    assert _daily(warehouse) == {"fine": (BIG, 10), "small": (7, 10)}
    hourly = warehouse.query_rows(
        f"SELECT DISTINCT account_id FROM {warehouse.table('usage_hourly')} ORDER BY ALL"
    )
    assert hourly == [("fine",), ("small",)]
    quarantined = _quarantined(warehouse)
    assert [(q[0], q[1], q[3], q[4]) for q in quarantined] == [
        ("mixed.ndjson.gz", 1, "request_count", str(BIG)),
        ("mixed.ndjson.gz", 2, "request_count", str(BIG)),
        ("mixed.ndjson.gz", 3, "request_count", str(BIG)),
        ("over.parquet", 1, "bytes", str(BIG)),
        ("over.parquet", 2, "bytes", str(BIG)),
        ("over.parquet", 3, "bytes", str(BIG)),
    ]
    detail = quarantined[-1][5]
    assert "account_id=greedy" in detail and f"sums to {3 * BIG} bytes" in detail
    checks = _checks(first)
    assert checks["usage_daily_is_exact"]
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in first.asset_materializations_for_node("published_usage")
    }["usage_daily"]
    assert meta["groups_overflowed"].value == 2 and meta["rows_quarantined_overflow"].value == 6

    # Re-running reports the same six rows once (the latest publication's), publishes the same.
    from usage_etl.usage.audit import quarantine_summary

    for _ in range(2):
        again = run_daily(DAY)
        assert again.success and _checks(again)["usage_daily_is_exact"]
        assert _daily(warehouse) == {"fine": (BIG, 10), "small": (7, 10)}
        assert quarantine_summary(warehouse, date.fromisoformat(DAY)).by_rule == {
            "group_sum_overflow": 6
        }
