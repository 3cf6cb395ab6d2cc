"""Hostile files end to end (SeaweedFS -> daily_usage -> chDB) and totals that overflow UInt64.

The readers' properties are proven in test_hostile_files.py; here the same poison travels the
whole way: the run succeeds, good rows of the same day are billed exactly, every bad file or row
is in the quarantine with its rule, and a group whose sum stops fitting UInt64 is withdrawn by
rule (its rows quarantined as group_sum_overflow) while the run and the rest of the day go on.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from reliability_harness import (
    DAY,
    count_rows,
    daily_table,
    expected_charges,
    expected_daily,
    failure_message,
    run_job,
    stored_charges,
)
from rollup_files import ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.invoicing.store import read_lines
from usage_etl.periods import Period

MAX = 2**63 - 1


def _json(row: dict) -> bytes:
    return json.dumps({k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()},
                      ensure_ascii=False).encode()  # fmt: skip


def _parquet_with(column: str, array: pa.Array, rows: list[dict]) -> bytes:
    table = pq.read_table(io.BytesIO(parquet_bytes(rows)))
    table = table.set_column(table.schema.get_field_index(column), column, array)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _quarantine(warehouse) -> dict[tuple[str, str], int]:
    rows = warehouse.query_rows(
        f"SELECT splitByChar('/', source_key)[-1], toString(rule), count() "
        f"FROM {warehouse.table('quarantined_rows')} GROUP BY ALL"
    )
    return {(name, rule): n for name, rule, n in rows}


def test_poisoned_files_are_quarantined_and_the_rest_of_the_day_is_exact(landing, warehouse):
    good = [rollup(f"ok-{i}", bytes=1000 + i, account_id=f"acct-{i % 2}") for i in range(6)]
    duplicate_keys = rollup("dup", bytes=5)
    landing.put("good.parquet", parquet_bytes(good[:3]))
    lines = [
        _json(good[3]),
        _json(rollup("surrogate")).replace(b'"acct-1"', b'"\\ud800"'),
        b'{"event_id": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        _json(rollup("nan", bytes=0)).replace(b'"bytes": 0', b'"bytes": NaN'),
        _json(rollup("big", bytes=0)).replace(b'"bytes": 0', b'"bytes": 9223372036854775808'),
        _json(rollup("typed", account_id=0)),
        # Duplicate keys: the first value counts, whichever parser reads the line.
        _json(duplicate_keys).replace(b'"bytes": 5', b'"bytes": 5, "bytes": "x"'),
        _json(good[4]),
        b"\x00\xff garbage",
        _json(rollup("x" * 300)),
        _json(good[5]),
    ]
    landing.put("mixed.ndjson.gz", gzip.compress(b"\n".join(lines) + b"\n"))
    far = pa.array([10**16], pa.timestamp("ms"))
    landing.put("far.parquet", _parquet_with("emitted_at", far, [rollup("far")]))
    landing.put("random.parquet", os.urandom(512))
    landing.put("empty.ndjson.gz", b"")
    landing.put("cut.ndjson.gz", ndjson_gz_bytes([rollup("cut")])[:-3])

    result = run_job("daily_usage", DAY.isoformat())

    assert result.success, failure_message(result)
    assert daily_table(warehouse) == expected_daily([*good, duplicate_keys])
    assert _quarantine(warehouse) == {
        ("mixed.ndjson.gz", "account_id"): 2,  # lone surrogate; a number where a string belongs
        ("mixed.ndjson.gz", "invalid_json"): 2,  # 5000-deep nesting; binary garbage
        ("mixed.ndjson.gz", "bytes"): 2,  # NaN; 2^63
        ("mixed.ndjson.gz", "event_id"): 1,  # 300 characters
        ("far.parquet", "emitted_at"): 1,  # 300,000 years from now
        ("random.parquet", "unreadable_file"): 1,
        ("empty.ndjson.gz", "unreadable_file"): 1,
        ("cut.ndjson.gz", "unreadable_file"): 1,
    }


def _publications(warehouse) -> int:
    return count_rows(warehouse, "usage_day_publications")


def test_a_late_file_that_pushes_a_group_beyond_uint64_withdraws_it_by_rule(landing, warehouse):
    landing.put("a.parquet", parquet_bytes([rollup("e1", bytes=MAX), rollup("e2", bytes=MAX)]))
    first = run_job("daily_usage", DAY.isoformat())
    assert first.success
    published = daily_table(warehouse)
    assert published[0][-2] == 2 * MAX  # above Int64, still exact in UInt64
    assert count_rows(warehouse, "quarantined_rows", "rule = 'group_sum_overflow'") == 0

    landing.put("b.ndjson.gz", ndjson_gz_bytes([rollup("e3", bytes=MAX)]))  # 3 x (2^63 - 1)
    second = run_job("daily_usage", DAY.isoformat())

    # One node's values never stop a day: the group that no longer fits is not published, its
    # three rollups are quarantined under the rule, and the run succeeds without a retry.
    assert second.success
    assert daily_table(warehouse) == []
    assert count_rows(warehouse, "quarantined_rows", "rule = 'group_sum_overflow'") == 3
    retried = [
        e for e in second.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retried == []
    assert _publications(warehouse) == 2


def test_a_month_beyond_uint64_is_invoiced_exactly(landing, warehouse, monkeypatch):
    """Each day fits UInt64; the month does not, and is still priced to the cent."""
    days = [date(2026, 10, 5), date(2026, 10, 6)]
    rows = []
    for day in days:
        pair = [rollup(f"{day}-{i}", day=day, bytes=MAX, account_id="whale") for i in range(2)]
        landing.put("big.parquet", parquet_bytes(pair), day=day)
        rows += pair
        assert run_job("daily_usage", day.isoformat()).success
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-10-20T00:00:00Z")

    result = run_job("monthly_invoices", "2026-10-01")

    assert result.success, failure_message(result)
    lines = read_lines(warehouse, Period.parse("2026-10"))
    assert stored_charges(lines) == expected_charges(expected_daily(rows))
    gib = sum(
        q for (_, meter, _), (q, _) in stored_charges(lines).items() if meter == "egress_bytes"
    )
    assert gib > 2**34  # the month really is beyond 2^64 bytes


def test_a_gzip_bomb_is_quarantined_by_its_size_and_the_rest_of_the_day_is_exact(
    landing, warehouse, monkeypatch
):
    """A small object that inflates beyond the Python reader's cap (here 1 MiB) is quarantined
    whole with the setting named, before it is held in memory; the other files still count."""
    from usage_etl.usage import readers

    monkeypatch.setattr(readers, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    good = [rollup(f"ok-{i}", bytes=100 + i) for i in range(3)]
    landing.put("good.ndjson.gz", ndjson_gz_bytes(good))
    bomb = gzip.compress(_json(rollup("in-bomb")) + b"\n" + b" " * (8 << 20) + b"\n")
    assert len(bomb) < 64 << 10
    landing.put("bomb.ndjson.gz", bomb)

    result = run_job("daily_usage", DAY.isoformat())

    assert result.success, failure_message(result)
    assert daily_table(warehouse) == expected_daily(good)
    assert _quarantine(warehouse) == {("bomb.ndjson.gz", "unreadable_file"): 1}
    (detail,) = warehouse.query_rows(f"SELECT detail FROM {warehouse.table('quarantined_rows')}")[0]
    assert "USAGE_ETL_MAX_DECOMPRESSED_BYTES" in detail and "1,048,576" in detail
