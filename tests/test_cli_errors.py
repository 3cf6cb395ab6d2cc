"""Every user-caused error of `usage-etl` is one line on stderr and exit status 2: no traceback,
no library wording (pydantic, the HTTP driver). `--debug` shows the traceback instead.

Run through the installed `usage-etl` entry point in a subprocess: what a user's shell sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from usage_etl.cli.errors import describe, one_line
from usage_etl.defs.reconciliation.report import reconciliation_description
from usage_etl.reconciliation.compare import (
    GroupDiff,
    KindSummary,
    Reconciliation,
    Status,
    Tolerances,
)

CLI = Path(sys.executable).with_name("usage-etl")
LIBRARY_WORDS = ("Traceback", "pydantic", "Value error", "HTTPConnectionPool", "errors.pydantic")


def run_cli(*args: str, env: dict | None = None, home: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_ETL_", "AWS_"))}
    clean.update({"DAGSTER_HOME": str(home), **(env or {})})
    return subprocess.run([str(CLI), *args], env=clean, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("usage-etl: error: ")
    for word in LIBRARY_WORDS:
        assert word not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


CASES = {
    "bad period": (("invoices", "--period", "October"), {}, ("--period", "2026-10")),
    "bad export period": (
        ("invoices", "export", "--period", "2026-13", "--to", "x"),
        {},
        ("--period",),
    ),
    "bad landing URL": (
        ("invoices", "--period", "2026-10"),
        {"USAGE_ETL_LANDING_URL": "http://bucket/prefix"},
        ("USAGE_ETL_LANDING_URL", "s3://"),
    ),
    "bad DSN": (
        ("invoices", "--period", "2026-10"),
        {"USAGE_ETL_CLICKHOUSE_DSN": "http://127.0.0.1:1"},
        ("127.0.0.1:1",),
    ),
    "bad AS_OF setting": (
        ("usage", "acme", "--range", "7d"),
        {"USAGE_ETL_AS_OF": "yesterday"},
        ("USAGE_ETL_AS_OF", "yesterday"),
    ),
    "bad --as-of": (("usage", "acme", "--as-of", "noon"), {}, ("--as-of", "noon")),
    "bad range": (("usage", "acme", "--range", "fortnight"), {}, ("--range", "FROM..TO")),
    "unknown format": (
        ("invoices", "--period", "2026-10", "--format", "xml"),
        {},
        ("--format", "xml"),
    ),
    "unknown usage format": (("usage", "acme", "--format", "xml"), {}, ("--format",)),
    "missing price book": (
        ("demo", "--days", "1"),
        {"USAGE_ETL_PRICE_BOOK": "/nonexistent/price_book.yaml"},
        ("/nonexistent/price_book.yaml",),
    ),
    "missing option": (("invoices",), {}, ("--period",)),
    "unknown command": (("invoice",), {}, ("invoice",)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_user_errors_are_one_line_exit_2(case, tmp_path):
    args, env, expected = CASES[case]
    assert_one_line_error(run_cli(*args, env=env, home=tmp_path), *expected)


def test_a_fresh_warehouse_says_what_to_run_first(tmp_path):
    result = run_cli("invoices", "--period", "2026-10", home=tmp_path)
    assert_one_line_error(result, "migrate")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "invoices", "--period", "2026-10", home=tmp_path,
                     env={"USAGE_ETL_LANDING_URL": "http://bucket/prefix"})  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" in result.stderr or "ValidationError" in result.stderr


def test_a_bug_is_not_a_user_error_and_library_prefixes_are_dropped():
    assert describe(ZeroDivisionError("x")) is None  # a bug is not a user error
    assert one_line("Value error, must look\n  like s3://b/p [type=value_error]") == (
        "must look like s3://b/p"
    )


def _group(status: Status) -> GroupDiff:
    return GroupDiff(
        account_id="acme", project_id="p", artifact_kind="xcode", action="download",
        rollup_bytes=10, cache_bytes=100, status=status, nodes=(("node-1", 10),),
    )  # fmt: skip


def test_reconciliation_text_names_no_empty_worst_list():
    kind = KindSummary(
        artifact_kind="xcode", action="download", rollup_bytes=10, cache_bytes=100, groups=3,
        error_groups=1, warn_groups=2,
    )  # fmt: skip
    from datetime import date

    rec = Reconciliation(date(2026, 10, 5), Tolerances(), [kind], [_group(Status.ERROR)])
    text = reconciliation_description(rec)
    assert "Worst: ." not in text and "Worst: account acme" in text
    assert "2 group(s) with rollups ABOVE" in text
