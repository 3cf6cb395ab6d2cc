"""daily_usage on real SeaweedFS + chDB with hand-built files whose totals are known exactly."""

from __future__ import annotations

import dagster as dg
import pytest
from rollup_files import Landing, ndjson_gz_bytes, parquet_bytes, rollup, run_daily, usage_rows

DAY = "2026-10-05"


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _quarantine(warehouse) -> dict[str, int]:
    return dict(
        warehouse.query_rows(
            f"SELECT toString(rule), count() FROM {warehouse.table('quarantined_rows')} "
            "GROUP BY rule"
        )
    )


def _check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_latest_version_wins_whatever_the_upload_order(landing, warehouse):
    # The corrected version (emitted later) is uploaded first, under a name sorting first.
    landing.put("a-corrected.parquet", parquet_bytes([rollup("e1", bytes=700, emitted_minute=30)]))
    landing.put("b-original.parquet", parquet_bytes([rollup("e1", bytes=500), rollup("e2")]))
    # An identical re-delivery of the original under a new name, as NDJSON.
    landing.put("c-redelivery.ndjson.gz", ndjson_gz_bytes([rollup("e1", bytes=500), rollup("e2")]))

    result = run_daily(DAY)

    assert result.success
    assert usage_rows(warehouse) == [
        ("acct-1", "proj-1", "node-a", "egress", "download", "xcode", "public_internet", 1700, 20)
    ]
    daily = result.asset_materializations_for_node("published_usage")
    metadata = {m.asset_key.to_user_string(): m.metadata for m in daily}["usage_daily"]
    assert metadata["duplicates_removed"].value == 3
    assert metadata["conflicts"].value == 0
    checks = _check_results(result)
    assert checks["usage_daily_is_exact"] and checks["conflict_report"]
    assert checks["quarantine_report"]


def test_invalid_rows_are_quarantined_by_rule_and_good_rows_still_load(landing, warehouse):
    rows = [
        rollup("ok-1", bytes=100),
        rollup("neg", bytes=-1),
        rollup("dir", direction="sideways"),
        rollup("ver", schema_version=2),
        rollup("outside", hour=3, minute=0, window_start=None),
        rollup("acct", account_id=""),
        rollup("ws", window_seconds=7),
        rollup("", bytes=5),
        rollup("net", network_path="carrier_pigeon"),
        rollup("node", node_id="node-b"),
    ]
    landing.put("mixed.parquet", parquet_bytes(rows))
    late_window = rollup("late-window", hour=4)  # window in hour 4, file under hour 3
    landing.put(
        "ndjson.ndjson.gz",
        ndjson_gz_bytes(
            [rollup("ok-2", bytes=50), late_window], raw_lines=(b"{not json", b'{"bytes": "12"}')
        ),
    )

    result = run_daily(DAY)

    assert result.success
    assert usage_rows(warehouse)[0][-2:] == (150, 20)
    by_rule = _quarantine(warehouse)
    assert by_rule["invalid_json"] == 1
    # '{"bytes": "12"}' breaks several rules; a wrong JSON type is found while parsing, first.
    assert by_rule["bytes"] == 2
    for rule in (
        "schema_version",
        "direction",
        "window_start",
        "account_id",
        "window_seconds",
        "event_id",
        "network_path",
        "node_id_mismatch",
        "window_outside_hour",
    ):
        assert by_rule[rule] == 1, rule
    assert sum(by_rule.values()) == 12
    assert _check_results(result)["quarantine_report"] is False


def test_unreadable_and_incomplete_files_are_quarantined_whole(landing, warehouse):
    good = parquet_bytes([rollup("e1", bytes=10)])
    landing.put("good.parquet", good)
    landing.put("truncated.parquet", good[: len(good) // 2])
    gz = ndjson_gz_bytes([rollup("e9", bytes=99)])
    landing.put("truncated.ndjson.gz", gz[:-8])
    landing.put("nocol.parquet", parquet_bytes([rollup("e8")], drop=("bytes",)))
    landing.put_raw(f"date={DAY}/hour=03/node=node-a/_SUCCESS", b"")
    landing.put_raw(f"date={DAY}/hour=03/node=node-a/_tmp/part.parquet", good)
    landing.put_raw(f"date={DAY}/hour=03/node=node-a/notes.csv", b"a,b")

    result = run_daily(DAY)

    assert result.success
    assert usage_rows(warehouse)[0][-2:] == (10, 10)
    files = dict(
        warehouse.query_rows(
            f"SELECT splitByChar('/', object_key)[-1], toString(status) "
            f"FROM {warehouse.table('ingest_objects')}"
        )
    )
    assert files == {
        "good.parquet": "loaded",
        "truncated.parquet": "quarantined",
        "truncated.ndjson.gz": "quarantined",
        "nocol.parquet": "quarantined",
        "_SUCCESS": "ignored",
        "part.parquet": "ignored",
        "notes.csv": "ignored",
    }
    assert _quarantine(warehouse) == {"unreadable_file": 2, "missing_columns": 1}


def test_rerun_picks_up_late_and_overwritten_objects_without_double_counting(landing, warehouse):
    landing.put("first.parquet", parquet_bytes([rollup("e1", bytes=100)]))
    overwritten = landing.put("second.parquet", parquet_bytes([rollup("e2", bytes=200)]))
    assert run_daily(DAY).success
    assert usage_rows(warehouse)[0][-2] == 300

    # A late file for another hour, and second.parquet replaced with a corrected version
    # (emitted later: contract §1, only a greater emitted_at replaces a delivered version).
    landing.put("late.ndjson.gz", ndjson_gz_bytes([rollup("e3", hour=7, bytes=30)]), hour=7)
    corrected = parquet_bytes([rollup("e2", bytes=250, emitted_minute=45)])
    landing.client.put_object(Bucket=landing.bucket, Key=overwritten, Body=corrected)
    second = run_daily(DAY)

    assert second.success
    assert usage_rows(warehouse)[0][-2] == 380
    rows_meta = second.asset_materializations_for_node("rollup_rows")[0].metadata
    assert rows_meta["objects_already_ingested"].value == 1
    assert rows_meta["objects_new_loaded"].value == 2


def test_three_runs_of_a_day_leave_identical_tables(landing, warehouse):
    landing.put("a.parquet", parquet_bytes([rollup(f"e{i}", bytes=i, minute=i) for i in range(30)]))
    landing.put("b.ndjson.gz", ndjson_gz_bytes([rollup("e1", bytes=1), rollup("x", bytes=-5)]))
    snapshots = []
    for _ in range(3):
        assert run_daily(DAY).success
        snapshots.append(
            (
                warehouse.query_rows(
                    f"SELECT * FROM {warehouse.table('usage_daily')} ORDER BY ALL"
                ),
                warehouse.query_rows(
                    f"SELECT * FROM {warehouse.table('usage_hourly')} ORDER BY ALL"
                ),
            )
        )
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert sum(r[-2] for r in snapshots[0][0]) == sum(range(30))


def test_conflicting_versions_are_resolved_deterministically_and_reported(landing, warehouse):
    landing.put("a.parquet", parquet_bytes([rollup("e1", bytes=100)]))
    landing.put("b.parquet", parquet_bytes([rollup("e1", bytes=900)]))  # same emitted_at
    first = run_daily(DAY)
    winner = usage_rows(warehouse)[0][-2]
    assert winner in (100, 900)
    assert _check_results(first)["conflict_report"] is False

    # The same two versions swapped between the objects (so read in the opposite order): the
    # choice depends on the versions only, not on files or processing order.
    landing.put("a.parquet", parquet_bytes([rollup("e1", bytes=900)]))
    landing.put("b.parquet", parquet_bytes([rollup("e1", bytes=100)]))
    assert run_daily(DAY).success
    assert usage_rows(warehouse)[0][-2] == winner


def test_an_empty_day_publishes_an_empty_partition(landing, warehouse):
    landing.put("a.parquet", parquet_bytes([rollup("e1", bytes=100)]))
    assert run_daily(DAY).success
    landing.client.delete_object(Bucket=landing.bucket, Key=landing.key("a.parquet"))
    # Deleted objects stay billed: delivery is at least once and the rows were received.
    assert run_daily(DAY).success
    assert usage_rows(warehouse)[0][-2] == 100
    assert run_daily("2026-10-07").success
    assert usage_rows(warehouse, "2026-10-07") == []


def test_a_day_with_nothing_staged_publishes_nothing_and_removes_its_usage(landing, warehouse):
    """A publish that finds no staged row for its day (here: the day's staged partition dropped
    after it was published) swaps in an empty publication: the day's usage goes, atomically,
    and another day's stays."""
    from datetime import date

    from usage_etl.usage.publish import PublishReport, publish_day

    landing.put("a.parquet", parquet_bytes([rollup("e1", bytes=100)]))
    other = date(2026, 10, 6)
    landing.put("b.parquet", parquet_bytes([rollup("e2", bytes=7, day=other)]), day=other)
    assert run_daily(DAY).success and run_daily(other.isoformat()).success
    assert usage_rows(warehouse)[0][-2] == 100
    warehouse.command(
        f"ALTER TABLE {warehouse.table('rollup_rows')} DROP PARTITION {{day:Date}}", {"day": DAY}
    )
    report = publish_day(warehouse, date.fromisoformat(DAY), "manual")
    assert report == PublishReport(date.fromisoformat(DAY), 0, 0, 0, 0, 0, 0, report.publish_id)
    assert usage_rows(warehouse) == []
    assert (
        warehouse.query_one(
            f"SELECT count() FROM {warehouse.table('usage_hourly')} WHERE day = {{day:Date}}",
            {"day": DAY},
        )
        == 0
    )
    assert usage_rows(warehouse, other.isoformat())[0][-2] == 7


def test_a_large_day_is_deduplicated_in_buckets_with_the_same_result(
    landing, warehouse, monkeypatch
):
    """Big days are deduplicated in event_hash buckets and aggregated in account buckets (flat
    memory), with their work tables on disk (a small day's are Memory tables); the totals, the
    hourly rows, the duplicate count and the exactness check must not change."""
    from usage_etl.usage import publish

    rows = [
        rollup(f"e{i}", bytes=i + 1, minute=i % 60, account_id=f"acct-{i % 5}") for i in range(40)
    ]
    landing.put("a.parquet", parquet_bytes(rows))
    landing.put("b.parquet", parquet_bytes(rows[:15]))  # re-delivered
    landing.put("c.ndjson.gz", ndjson_gz_bytes([rollup("e3", bytes=999, emitted_minute=40)]))
    single = run_daily(DAY)

    def published() -> list:
        return [
            warehouse.query_rows(f"SELECT * FROM {warehouse.table(table)} ORDER BY ALL")
            for table in ("usage_hourly", "usage_daily")
        ]

    expected = published()

    monkeypatch.setattr(publish, "DEDUPE_BUCKET_ROWS", 7)  # 56 staged rows -> 8 buckets
    monkeypatch.setattr(publish, "GROUP_BUCKET_ROWS", 9)  # 56 counting rows -> 7 account buckets
    monkeypatch.setattr(publish, "SMALL_DAY_ROWS", 0)  # a large day's work tables, on disk
    bucketed = run_daily(DAY)

    assert bucketed.success and _check_results(bucketed)["usage_daily_is_exact"]
    assert published() == expected  # each bucket spells out its own hourly and daily rows
    total = sum(range(1, 41)) - 4 + 999
    assert sum(row[-2] for row in usage_rows(warehouse)) == total
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in bucketed.asset_materializations_for_node("published_usage")
    }["usage_daily"]
    assert meta["duplicates_removed"].value == 16
    assert single.success
