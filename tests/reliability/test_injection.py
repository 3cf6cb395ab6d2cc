"""Injection: ids built to break SQL, format strings or placeholders are stored and billed
literally, end to end, and never reach the text of a query.

chDB has no `system.query_log`, so the test records the SQL text of every call the pipeline
makes through `Warehouse` (the only way it talks to ClickHouse) and checks that no id appears
in any of it: values travel as query parameters or as Arrow/native insert data.
"""

from __future__ import annotations

import pytest
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

from usage_etl.invoicing.store import read_invoices, read_lines
from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse

BASE = [
    "'; DROP TABLE usage_daily; --",
    "acme' OR '1'='1",
    'quote"double',
    "back\\slash\\",
    "{day:Date}",
    "{x:String}",
    "{}",
    "%s%s%(x)s",
    "$1 ${database}",
    "\\N",
    "tab\tnew\nline",
    "nul\x00byte",
    "名前-😀",
    "`usage`.`invoices`",
]
# Each id ends in a marker of its own: if an id were ever pasted into SQL, its marker would be
# in the query text (the ids themselves, like "{day:Date}", may legitimately appear there).
HOSTILE = [f"{text}~{i:02d}q" for i, text in enumerate(BASE)]
NODE = "node-'\"{x:String}%s~99q"
MARKERS = [f"~{i:02d}q" for i in range(len(BASE))] + ["~99q"]


@pytest.fixture
def sql_log(monkeypatch) -> list[str]:
    """Every SQL text (or insert target) the pipeline sends, in this process."""
    sent: list[str] = []
    original = Warehouse._call

    def recording(self, fn, *args, **kwargs):
        if args and isinstance(args[0], str):
            sent.append(args[0])
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(Warehouse, "_call", recording)
    return sent


def _rows() -> list[dict]:
    rows = []
    for i, hostile in enumerate(HOSTILE):
        rows.append(
            rollup(
                f"evt-{hostile}", node_id=NODE, account_id=hostile, project_id=f"p-{hostile}",
                operation=hostile, artifact_kind=hostile, minute=i, bytes=(i + 1) * 2**30,
                request_count=(i + 1) * 50_000,
            )
        )  # fmt: skip
    return rows


def test_hostile_ids_are_stored_and_billed_literally(landing, warehouse, sql_log, monkeypatch):
    rows = _rows()
    landing.put("a.parquet", parquet_bytes(rows[::2]), node=NODE)
    landing.put("b.ndjson.gz", ndjson_gz_bytes(rows[1::2]), node=NODE)
    # A broken row whose offending value is hostile: quarantined with the value as written.
    landing.put("c.ndjson.gz", ndjson_gz_bytes([rollup("bad", node_id=NODE, direction=HOSTILE[0])]),
                node=NODE)  # fmt: skip

    daily = run_job("daily_usage", DAY.isoformat())
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-10-20T00:00:00Z")
    invoices = run_job("monthly_invoices", "2026-10-01")

    assert daily.success, failure_message(daily)
    assert invoices.success, failure_message(invoices)
    assert daily_table(warehouse) == expected_daily(rows)
    period = Period.parse("2026-10")
    lines = read_lines(warehouse, period)
    assert stored_charges(lines) == expected_charges(expected_daily(rows))
    for hostile in HOSTILE:  # finance's per-account read with the id as a parameter
        (invoice,) = read_invoices(warehouse, period, account_id=hostile)
        assert invoice["subtotal"] == sum(
            line["amount"] for line in lines if line["account_id"] == hostile
        )
    assert warehouse.query_rows(
        f"SELECT toString(rule), value FROM {warehouse.table('quarantined_rows')}"
    ) == [("direction", HOSTILE[0])]
    assert count_rows(warehouse, "ingest_objects", "node_id = {n:String}", {"n": NODE}) == 3

    leaked = {marker for marker in MARKERS for sql in sql_log if marker in sql}
    assert len(sql_log) > 50 and not leaked
