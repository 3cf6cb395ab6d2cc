"""Text that is not UTF-8 is a row problem: the file's good rows load, each bad row is
quarantined with a reason naming its field. Real SeaweedFS + chDB, through the daily_usage job
(ClickHouse's native read rejects such rows and hands the file to the Python reader)."""

from __future__ import annotations

import gzip
import io

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rollup_files import Landing, json_line, parquet_bytes, rollup, run_daily, usage_rows

DAY = "2026-10-05"


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def _with_raw_text(body: bytes, column: str, rows: dict[int, bytes]) -> bytes:
    """The Parquet file `body` with the given 0-based rows of a text column replaced by raw
    bytes (written as a UTF-8 string column, as a careless writer would)."""
    table = pq.read_table(io.BytesIO(body))
    values = [v.encode() if v is not None else None for v in table.column(column).to_pylist()]
    for row, raw in rows.items():
        values[row] = raw
    text = pa.array(values, pa.binary()).view(pa.string())
    table = table.set_column(table.column_names.index(column), column, text)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _quarantined(warehouse) -> list[tuple]:
    return warehouse.query_rows(
        f"SELECT source_row, toString(rule), field, value FROM "
        f"{warehouse.table('quarantined_rows')} ORDER BY source_row"
    )


def test_a_parquet_file_with_two_invalid_utf8_strings_loads_its_28_good_rows(landing, warehouse):
    rows = [rollup(f"e{i}", bytes=i + 1, minute=i) for i in range(30)]
    body = parquet_bytes(rows)
    with pytest.raises(pl.exceptions.ComputeError, match="UTF-8"):  # what polars alone does
        pl.read_parquet(io.BytesIO(_with_raw_text(body, "account_id", {4: b"acct-\xff"})))
    body = _with_raw_text(body, "account_id", {4: b"acct-\xff"})
    body = _with_raw_text(body, "region", {17: b"\xc3\x28eu"})
    landing.put("mixed.parquet", body)

    result = run_daily(DAY)

    assert result.success
    assert usage_rows(warehouse)[0][-2] == sum(range(1, 31)) - 5 - 18
    assert _quarantined(warehouse) == [
        (5, "account_id", "account_id", "not UTF-8: b'acct-\\xff'"),
        (18, "region", "region", "not UTF-8: b'\\xc3(eu'"),
    ]
    ledger = warehouse.query_rows(
        f"SELECT toString(status), rows_read, rows_loaded, rows_quarantined "
        f"FROM {warehouse.table('ingest_objects')}"
    )
    assert ledger == [("loaded", 30, 28, 2)]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["usage_daily_is_exact"] and checks["quarantine_report"] is False


def test_an_ndjson_line_with_invalid_utf8_is_quarantined_naming_its_field(landing, warehouse):
    good = [json_line(rollup(f"e{i}", bytes=10, minute=i)) for i in range(3)]
    bad = json_line(rollup("bad", operation="OPERATION")).replace(b"OPERATION", b"down\xffload")
    landing.put("lines.ndjson.gz", gzip.compress(b"\n".join([good[0], bad, *good[1:]]) + b"\n"))

    result = run_daily(DAY)

    assert result.success
    assert usage_rows(warehouse)[0][-2] == 30
    [(row, rule, field, _)] = _quarantined(warehouse)
    assert (row, rule, field) == (2, "operation", "operation")
