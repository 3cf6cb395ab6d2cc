"""The ingest's per-object reports: one log event per day and kind (not one per object) that
names every object and its reason, and the same lists in the day's materialization metadata."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest
from rollup_files import Landing, parquet_bytes, rollup

FIRST = date(2026, 10, 4)
DAYS = [FIRST, FIRST + timedelta(days=1)]
KINDS = {  # metadata entry -> the title of its log event
    "quarantined_files": "quarantined files",
    "ignored_objects": "ignored objects",
    "objects_read_by_python": "read by Python, not ClickHouse",
}


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _deliver(landing: Landing, day: date) -> dict[str, dict[str, str]]:
    """A good file, two unreadable ones, one missing a column, three stray objects; returns
    the quarantined and ignored objects the day must report, by URL."""
    good = parquet_bytes([rollup(f"{day}-e1", day=day, bytes=10)])
    landing.put("good.parquet", good, day=day)
    bad = {
        landing.put("truncated-a.parquet", good[: len(good) // 2], day=day): "unreadable_file",
        landing.put("truncated-b.parquet", good[:40], day=day): "unreadable_file",
        landing.put("nocol.parquet", parquet_bytes([rollup(f"{day}-e2", day=day)],
                                                   drop=("bytes",)), day=day): "missing_columns",
    }  # fmt: skip
    prefix = f"date={day}/hour=03/node=node-a"
    stray = {
        landing.put_raw(f"{prefix}/_SUCCESS", b""): None,
        landing.put_raw(f"{prefix}/_tmp/part.parquet", good): None,
        landing.put_raw(f"{prefix}/notes.csv", b"a,b"): None,
    }
    url = f"s3://{landing.bucket}/"
    return {
        "quarantined_files": {url + key: why for key, why in bad.items()},
        "ignored_objects": {url + key: why for key, why in stray.items()},
    }


def _run_range() -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    from usage_etl.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": DAYS[0].isoformat(),
        "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
    }
    result = defs().resolve_job_def("daily_usage").execute_in_process(
        tags=tags, instance=instance, raise_on_error=False
    )  # fmt: skip
    return result, instance


def test_each_day_logs_one_event_per_kind_naming_every_object(landing, warehouse):
    expected = {day: _deliver(landing, day) for day in DAYS}

    result, instance = _run_range()

    assert result.success
    messages = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.step_key == "rollup_rows" and not entry.is_dagster_event
    ]
    metadata = {
        m.partition: m.metadata
        for m in result.asset_materializations_for_node("rollup_rows")
        if m.partition
    }
    assert sorted(metadata) == [d.isoformat() for d in DAYS]
    for day in DAYS:
        meta = metadata[day.isoformat()]
        for kind, title in KINDS.items():
            listed = meta[kind].value
            events = [m for m in messages if m.startswith(f"{day}: {len(listed)} {title}:")]
            if not listed:
                assert not [m for m in messages if m.startswith(f"{day}: ") and title in m]
                continue
            assert len(events) == 1, (day, kind, messages)
            lines = events[0].splitlines()[1:]
            assert lines == [f"  {url}: {why}" for url, why in listed.items()]
        assert meta["quarantined_files"].value == expected[day]["quarantined_files"]
        ignored = meta["ignored_objects"].value
        assert set(ignored) == set(expected[day]["ignored_objects"])
        assert all(why for why in ignored.values())
    # The truncated uploads went to Python first (a footer the engine could not read).
    assert all(metadata[d.isoformat()]["objects_read_by_python"].value for d in DAYS)
    # Before: one event per object (3 quarantined + 3 ignored + any handed back, per day).
    per_object = [m for m in messages if m.startswith(("quarantined file s3://", "ignored object"))]
    assert per_object == []
