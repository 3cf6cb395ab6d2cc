"""Table assets carry their column schema and owners, and the finance tables' schemas say what
docs/finance.md says. Also: the first partition day and the automation default status come from
the environment when the definitions load."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from usage_etl.definitions import defs
from usage_etl.defs.column_schemas import COLUMN_SCHEMA
from usage_etl.settings import REPO_ROOT

TABLE_ASSETS = (
    "cache_events", "rollup_rows", "usage_hourly", "usage_daily", "invoice_line_items", "invoices",
)  # fmt: skip


def _node(key: str):
    return defs().resolve_asset_graph().get(dg.AssetKey(key))


@pytest.mark.parametrize("key", TABLE_ASSETS)
def test_every_table_asset_has_a_column_schema_and_owners(key):
    node = _node(key)
    schema = node.metadata[COLUMN_SCHEMA]
    assert isinstance(schema, dg.TableSchema) and schema.columns
    assert all(c.description for c in schema.columns)
    assert node.owners


@pytest.mark.parametrize("key", ["invoice_line_items", "invoices", "invoice_exports"])
def test_finance_owns_the_invoicing_assets(key):
    assert "team:finance" in _node(key).owners


def finance_table(title: str) -> list[tuple[str, str]]:
    """(column, type) rows of the docs/finance.md table under the heading naming `title`."""
    text = (REPO_ROOT / "docs" / "finance.md").read_text()
    section = text.split(f"## `{title}`", 1)[1].split("\n## ", 1)[0]
    rows, shared = [], None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("column", "") or set(cells[0]) <= {"-"}:
            continue
        names = [n.strip() for n in cells[0].split(",")]
        if len(names) > 1:  # "invoice_id, account_id, … | | as on the lines"
            shared = names
            continue
        rows.append((names[0], cells[1]))
    return ([(n, None) for n in shared or []]) + rows


@pytest.mark.parametrize("table", ["invoice_line_items", "invoices"])
def test_finance_schemas_match_docs_finance_md(table):
    documented = finance_table(table)
    schema = {c.name: c.type for c in _node(table).metadata[COLUMN_SCHEMA].columns}
    assert [name for name, _ in documented] == list(schema)
    lines = {c.name: c.type for c in _node("invoice_line_items").metadata[COLUMN_SCHEMA].columns}
    for name, type_ in documented:
        assert schema[name] == (type_ or lines[name]), name


def _load(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    """Load the definitions in a fresh interpreter (they read the environment once, at load)."""
    return subprocess.run(
        [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


PROBE = """
from usage_etl.definitions import defs
d = defs()
daily = d.resolve_job_def("daily_usage").partitions_def
monthly = d.resolve_job_def("monthly_invoices").partitions_def
print(daily.get_first_partition_key(), monthly.get_first_partition_key())
automation = [*d.schedules, *d.sensors]
print(sorted({a.default_status.value for a in automation}))
"""


def test_first_day_and_automation_status_come_from_the_environment():
    default = _load({}, PROBE)
    assert default.returncode == 0, default.stderr
    assert default.stdout.split("\n")[:2] == ["2025-01-01 2025-01-01", "['RUNNING']"]
    demo = _load({"USAGE_ETL_FIRST_DAY": "2026-10-05", "USAGE_ETL_AUTOMATION": "stopped"}, PROBE)
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.split("\n")[:2] == ["2026-10-05 2026-10-01", "['STOPPED']"]
    bad = _load({"USAGE_ETL_FIRST_DAY": "October"}, PROBE)
    assert bad.returncode != 0 and "USAGE_ETL_FIRST_DAY must be a day like" in bad.stderr
