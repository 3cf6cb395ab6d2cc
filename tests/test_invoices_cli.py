"""`usage-etl invoices` and `usage-etl roles`, through the real command line app."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta

from test_invoices import OCT, add_usage, run
from typer.testing import CliRunner

from usage_etl.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_invoices_command_prints_a_period_in_every_format(warehouse, settings):
    add_usage(warehouse, date(2026, 10, 3), "beta", egress=25, requests=150_000)
    add_usage(warehouse, date(2026, 10, 31), "acme", egress=150)
    run(warehouse, settings, OCT, "2026-10-20T00:00:00")

    as_json = invoke("invoices", "--period", "2026-10", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.output)
    assert {i["account_id"]: i["subtotal"] for i in payload["invoices"]} == {
        "acme": "7.00",
        "beta": "1.55",
    }

    for line in payload["lines"]:  # JSON keeps types: integers, null, UTC timestamps
        assert isinstance(line["tier"], int) and line["corrected_period_start"] is None
        assert line["computed_at"].endswith("Z")
    as_csv = invoke("invoices", "--period", "2026-10", "--account", "acme", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert all(datetime.fromisoformat(r["computed_at"]).utcoffset() == timedelta(0) for r in rows)
    assert all(r["computed_at"].endswith("Z") for r in rows)  # RFC 3339 in UTC
    assert [(r["tier"], r["quantity"], r["amount"]) for r in rows] == [
        ("1", "100.000000000", "5.00"),
        ("2", "50.000000000", "2.00"),
    ]

    table = invoke("invoices", "--period", "2026-10")
    assert table.exit_code == 0
    assert "1.55 USD" in table.output and "total: 8.55 USD" in table.output

    empty = invoke("invoices", "--period", "2026-09")
    assert empty.exit_code == 0 and "no invoices for 2026-09" in empty.output


def test_invoices_command_rejects_a_bad_period(usage_env):
    result = invoke("invoices", "--period", "October")
    assert result.exit_code != 0 and "2026-10" in result.output


def test_roles_grant_finance_select_on_invoice_tables_only(usage_env):
    result = invoke("roles")
    assert result.exit_code == 0
    finance = [s for s in result.output.split(";\n") if "finance_readonly" in s]
    grants = [s.strip() for s in finance if s.strip().startswith("GRANT")]
    database = usage_env["USAGE_ETL_DATABASE"]
    assert sorted(grants) == sorted(
        f"GRANT  SELECT ON `{database}`.{table} TO finance_readonly"
        for table in ("invoice_line_items", "invoices", "invoice_periods")
    )
    if usage_env["USAGE_ETL_CLICKHOUSE_DSN"].startswith("chdb:"):
        assert invoke("roles", "--apply").exit_code != 0  # the embedded engine has no ACL


def test_invoices_export_writes_the_finance_files_to_a_folder(warehouse, settings, tmp_path):
    import hashlib

    import pyarrow.parquet as pq

    add_usage(warehouse, date(2026, 10, 3), "beta", egress=25, requests=150_000)
    add_usage(warehouse, date(2026, 10, 31), "acme", egress=150)
    run(warehouse, settings, OCT, "2026-11-20T00:00:00")
    warehouse.close()  # the command opens the embedded engine itself

    result = invoke("invoices", "export", "--period", "2026-10", "--to", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "period=2026-10"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "final"
    for name, entry in manifest["files"].items():
        body = (folder / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == entry["bytes"]
    as_csv = invoke("invoices", "--period", "2026-10", "--format", "csv")
    assert (folder / "invoice_line_items.csv").read_text() == as_csv.stdout
    lines = pq.read_table(folder / "invoice_line_items.parquet")
    shown = json.loads(invoke("invoices", "--period", "2026-10", "--format", "json").stdout)
    assert lines.num_rows == manifest["files"]["invoice_line_items.csv"]["rows"]
    assert lines.column("line_id").to_pylist() == [line["line_id"] for line in shown["lines"]]
