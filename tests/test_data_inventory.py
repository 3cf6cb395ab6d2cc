"""docs/data_inventory.md is executable: its export, erasure, verification and retention SQL
(and the embedded export snippet) run against a real database holding two accounts."""

from __future__ import annotations

import re
import sys
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from usage_etl.settings import REPO_ROOT
from usage_etl.warehouse.migrations import split_statements

DOC = (REPO_ROOT / "docs" / "data_inventory.md").read_text()
OLD_DAY, DAY = date(2025, 10, 1), date(2026, 10, 5)
ACCOUNTS = ("acme", "other")


def sql_blocks(tag: str) -> list[str]:
    blocks = re.findall(rf"^ *```sql {tag}\n(.*?)^ *```", DOC, flags=re.S | re.M)
    assert blocks, f"no ```sql {tag} block in the data inventory"
    return [s for block in blocks for s in split_statements(block)]


def run(warehouse, tag: str, **settings) -> list[list[tuple]]:
    results = []
    for statement in sql_blocks(tag):
        sql = statement.replace("usage.", f"`{warehouse.database}`.")
        if sql.lstrip().upper().startswith("SELECT"):
            results.append(warehouse.query_rows(sql, {"account": "acme"}))
        else:
            warehouse.command(sql, {"account": "acme"}, **settings)
    return results


@pytest.fixture
def stored(warehouse):
    dims = ["region", "node_id", "direction", "operation", "artifact_kind", "network_path"]
    values = ["eu", "node-a", "egress", "download", "xcode", "unknown"]
    for account in ACCOUNTS:
        for day in (OLD_DAY, DAY):
            moment = datetime(day.year, day.month, day.day, 3, tzinfo=UTC)
            warehouse.insert_rows(
                "rollup_rows",
                [[day, f"{account}-{day}", account, "p", *values, moment, 3600, 5, 1, moment,
                  f"k/{day}", "etag", 0, "load"]],
                ["day", "event_id", "account_id", "project_id", *dims, "window_start",
                 "window_seconds", "bytes", "request_count", "emitted_at", "source_key",
                 "source_etag", "source_row", "run_id"],
            )  # fmt: skip
            warehouse.insert_rows(
                "quarantined_rows",
                [[day, f"k/{day}", "etag", "row", 1, "tenant_mismatch", "account_id", account]],
                ["day", "source_key", "source_etag", "scope", "source_row", "rule", "field",
                 "value"],
            )  # fmt: skip
            warehouse.insert_rows(
                "usage_hourly",
                [[day, moment, account, "p", *values, 5, 1]],
                ["day", "hour", "account_id", "project_id", *dims, "bytes", "request_count"],
            )
            warehouse.insert_rows(
                "usage_daily",
                [[day, account, "p", *values, 5, 1]],
                ["day", "account_id", "project_id", *dims, "bytes", "request_count"],
            )
        warehouse.insert_rows(
            "invoice_line_items",
            [[f"inv-{account}", f"li-{account}", account, "free", date(2026, 10, 1),
              date(2026, 11, 1), "usage", "requests", 1, Decimal("1"), "1k", Decimal("0"),
              Decimal("0"), "USD", "draft", "2026-10", datetime(2026, 10, 6, tzinfo=UTC)]],
            ["invoice_id", "line_id", "account_id", "plan", "period_start", "period_end", "kind",
             "meter", "tier", "quantity", "unit", "unit_price", "amount", "currency", "status",
             "price_book_version", "computed_at"],
        )  # fmt: skip
    warehouse.insert_rows(
        "ingest_objects",
        [[day, f"k/{day}", "etag", "loaded", "load"] for day in (OLD_DAY, DAY)],
        ["day", "object_key", "etag", "status", "run_id"],
    )
    return warehouse


def test_export_statements_return_the_account_and_nothing_else(stored):
    results = run(stored, "export")
    assert len(results) == 6
    for rows in results:
        cells = {cell for row in rows for cell in row}
        assert "acme" in cells and "other" not in cells


def test_embedded_export_snippet_writes_one_parquet_file_per_table(stored, tmp_path, monkeypatch):
    snippet = re.search(r"<<'PY'\n(.*?)^PY$", DOC, flags=re.S | re.M).group(1)
    monkeypatch.setattr(sys, "argv", ["-", "acme", str(tmp_path)])
    exec(compile(snippet, "data_inventory.md", "exec"), {})
    files = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert len(files) == 5
    daily = pq.read_table(tmp_path / "usage_daily.parquet")
    assert set(daily.column("account_id").to_pylist()) == {"acme"} and daily.num_rows == 2


def test_erasure_removes_the_account_everywhere_and_keeps_the_others(stored):
    run(stored, "erase", mutations_sync=2)
    run(stored, "erase-invoices", mutations_sync=2)
    (verified,) = run(stored, "verify")
    assert {table for table, _ in verified} == {
        "rollup_rows", "quarantined_rows", "usage_hourly", "usage_daily", "invoice_line_items",
    }  # fmt: skip
    assert all(count == 0 for _, count in verified)
    for table in ("rollup_rows", "usage_hourly", "usage_daily", "invoice_line_items"):
        others = stored.query_one(
            f"SELECT count() FROM {stored.table(table)} WHERE account_id = 'other'"
        )
        assert others > 0, table


def test_retention_drops_the_old_month_of_staging_only(stored):
    run(stored, "retention")
    for table in ("rollup_rows", "ingest_objects", "quarantined_rows"):
        days = stored.query_rows(f"SELECT DISTINCT day FROM {stored.table(table)}")
        assert days == [(DAY,)], table
    assert stored.query_one(f"SELECT count() FROM {stored.table('usage_daily')}") == 4
