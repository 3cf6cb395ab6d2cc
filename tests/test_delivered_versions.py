"""Contract §1: a version, once read from any object, stays delivered.

Overwriting an ingested object (with an older version of its rows, with a subset, with a file
that cannot be read) or deleting it retracts nothing: usage_daily stays the greatest-emitted_at
version of every event_id ever read, and re-running the day keeps it so. Real SeaweedFS + chDB,
through the daily_usage job.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from rollup_files import Landing, ndjson_gz_bytes, parquet_bytes, rollup, run_daily, usage_rows

from usage_etl.simulator.truth import ROW_SCHEMA, latest_versions
from usage_etl.usage.dedupe import CONTENT_HASH, content_hash

DAY = "2026-10-05"


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _expected(versions: list[dict]) -> list[tuple]:
    """usage_daily's rows for every version ever read, by the simulator's truth (which picks
    the greatest emitted_at, then the greatest content hash)."""
    frame = latest_versions(pl.DataFrame(versions, schema=ROW_SCHEMA))
    grouped = frame.group_by(
        "account_id", "project_id", "node_id", "direction", "operation", "artifact_kind",
        "network_path",
    ).agg(pl.col("bytes").sum(), pl.col("request_count").sum())  # fmt: skip
    return sorted(grouped.iter_rows())


def _run_twice_more_and_compare(landing, warehouse, expected: list[tuple]) -> None:
    for _ in range(2):
        again = run_daily(DAY)
        assert again.success and _checks(again)["usage_daily_is_exact"]
        assert usage_rows(warehouse) == expected


def test_overwriting_an_object_with_an_older_version_retracts_nothing(landing, warehouse):
    newer = [rollup("e1", bytes=700, emitted_minute=30), rollup("e2", bytes=50, account_id="b")]
    key = landing.put("a.parquet", parquet_bytes(newer))
    first = run_daily(DAY)
    assert first.success
    expected = _expected(newer)
    assert usage_rows(warehouse) == expected

    # The node re-writes the same key with an older version of e1 (and e2 unchanged).
    older = [rollup("e1", bytes=500, emitted_minute=5), rollup("e2", bytes=50, account_id="b")]
    landing.client.put_object(Bucket=landing.bucket, Key=key, Body=parquet_bytes(older))
    second = run_daily(DAY)

    assert second.success and _checks(second)["usage_daily_is_exact"]
    assert usage_rows(warehouse) == expected == _expected(newer + older)
    assert [r[-2] for r in expected] == [700, 50]
    _run_twice_more_and_compare(landing, warehouse, expected)


def test_overwriting_an_object_with_a_subset_retracts_nothing(landing, warehouse):
    rows = [rollup(f"e{i}", bytes=10 * (i + 1), minute=i, account_id=f"a{i % 2}") for i in range(6)]
    key = landing.put("a.ndjson.gz", ndjson_gz_bytes(rows))
    assert run_daily(DAY).success
    expected = _expected(rows)
    assert usage_rows(warehouse) == expected

    # The same key now holds two of the six rollups, one of them corrected (later emitted_at).
    corrected = rollup("e1", bytes=999, minute=1, account_id="a1", emitted_minute=50)
    landing.client.put_object(
        Bucket=landing.bucket, Key=key, Body=ndjson_gz_bytes([rows[0], corrected])
    )
    second = run_daily(DAY)

    assert second.success and _checks(second)["usage_daily_is_exact"]
    expected = _expected([*rows, corrected])
    assert usage_rows(warehouse) == expected
    assert sum(r[-2] for r in expected) == 10 + 999 + 30 + 40 + 50 + 60
    _run_twice_more_and_compare(landing, warehouse, expected)


def test_deleting_or_corrupting_an_object_retracts_nothing(landing, warehouse):
    kept = landing.put("kept.parquet", parquet_bytes([rollup("k1", bytes=1)]))
    deleted = landing.put("deleted.parquet", parquet_bytes([rollup("d1", bytes=20)]))
    spoiled = landing.put("spoiled.parquet", parquet_bytes([rollup("s1", bytes=300)]))
    assert run_daily(DAY).success
    assert usage_rows(warehouse)[0][-2] == 321

    landing.client.delete_object(Bucket=landing.bucket, Key=deleted)
    # Overwritten with bytes that are not Parquet: this version is quarantined whole, the
    # version read before stays delivered.
    landing.client.put_object(Bucket=landing.bucket, Key=spoiled, Body=b"not parquet")
    second = run_daily(DAY)

    assert second.success and _checks(second)["usage_daily_is_exact"]
    assert usage_rows(warehouse)[0][-2] == 321
    status = dict(
        warehouse.query_rows(
            f"SELECT object_key, toString(argMax(status, recorded_at)) "
            f"FROM {warehouse.table('ingest_objects')} GROUP BY object_key"
        )
    )
    assert status[spoiled] == "quarantined" and status[kept] == "loaded"
    _run_twice_more_and_compare(landing, warehouse, usage_rows(warehouse))


def test_an_older_version_arriving_under_a_new_key_does_not_replace_a_newer_one(landing, warehouse):
    landing.put("new.parquet", parquet_bytes([rollup("e1", bytes=700, emitted_minute=30)]))
    assert run_daily(DAY).success
    landing.put("old.parquet", parquet_bytes([rollup("e1", bytes=500, emitted_minute=5)]))
    assert run_daily(DAY).success
    assert usage_rows(warehouse)[0][-2] == 700


def test_the_content_hash_is_the_same_in_clickhouse_and_python(warehouse):
    """The tie rule is one rule: the Python hash (simulator's truth) equals the SQL one."""
    rng = random.Random(7)
    texts = ["", "a", "é", "日本", "a:b", "1:", "x" * 300, "tab\tnew\nline", "\u0000z"]
    rows = []
    for i in range(60):
        offset = timedelta(microseconds=rng.randrange(3600 * 10**6))
        start = datetime(2026, 10, 5, 3, tzinfo=UTC) + offset
        rows.append(
            {
                "day": start.date(), "event_id": f"e{i}", "source_key": "k", "source_etag": "t",
                "source_row": i, "run_id": "r",
                **{name: rng.choice(texts) for name in (
                    "node_id", "region", "account_id", "project_id", "direction", "operation",
                    "artifact_kind", "network_path")},
                "window_start": start, "window_seconds": rng.choice([1, 60, 3600]),
                "bytes": rng.choice([0, 1, 2**63 - 1, rng.randrange(2**63)]),
                "request_count": rng.randrange(2**63),
                "emitted_at": start,
            }
        )  # fmt: skip
    columns = list(rows[0])
    warehouse.insert_rows("rollup_rows", [[r[c] for c in columns] for r in rows], columns)
    hashed = dict(
        warehouse.query_rows(
            f"SELECT event_id, {CONTENT_HASH} FROM {warehouse.table('rollup_rows')}"
        )
    )
    for row in rows:
        sql = hashed[row["event_id"]]
        sql = sql.encode("latin-1") if isinstance(sql, str) else bytes(sql)
        assert sql == content_hash(row), row


def test_the_truth_and_the_pipeline_pick_the_same_conflict_winner(landing, warehouse):
    """Versions with the same emitted_at and different values: whichever the pipeline bills,
    the simulator's truth bills the same (the greatest content hash)."""
    versions = [
        rollup(f"c{i}", bytes=b, request_count=r, minute=i, account_id=f"acct-{i}")
        for i in range(8)
        for b, r in ((100 + i, 5), (900 - i, 3), (100 + i, 7))
    ]
    for n, version in enumerate(versions):
        landing.put(f"v{n}.parquet", parquet_bytes([version]))
    result = run_daily(DAY)
    assert result.success and not _checks(result)["conflict_report"]
    assert usage_rows(warehouse) == _expected(versions)
