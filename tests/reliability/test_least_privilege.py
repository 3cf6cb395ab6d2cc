"""The server roles of `sql/roles/` grant least privilege, and ClickHouse's own parser accepts
every statement (the embedded engine has no access control to apply them to)."""

from __future__ import annotations

import re

import pytest

from usage_etl.invoicing.roles import role_statements
from usage_etl.warehouse.migrations import DdlOptions

OPTIONS = [
    DdlOptions("usage"),
    DdlOptions("billing_prod", cache_events_table="app_cache_events", cluster="main"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=["single", "cluster"])
def test_every_role_statement_parses(options, warehouse):
    for statement in role_statements(options):
        formatted = warehouse.query_one("SELECT formatQuery({q:String})", {"q": statement})
        assert formatted, statement


def _grants(role: str, options: DdlOptions) -> list[str]:
    statements = [" ".join(s.split()) for s in role_statements(options)]
    return [s for s in statements if s.split()[0] in ("GRANT", "REVOKE") and s.endswith(role)]


@pytest.mark.parametrize("options", OPTIONS, ids=["single", "cluster"])
def test_finance_reads_invoice_tables_and_nothing_else(options):
    allowed = re.compile(
        r"GRANT (ON CLUSTER `\w+` )?SELECT ON `\w+`\.(invoice_line_items|invoices|invoice_periods)"
        r" TO finance_readonly"
    )
    grants = _grants("finance_readonly", options)
    assert len(grants) == 3 and all(allowed.fullmatch(g) for g in grants), grants


@pytest.mark.parametrize("options", OPTIONS, ids=["single", "cluster"])
def test_the_pipeline_writes_its_database_only_and_never_cache_events(options):
    statements = _grants("pipeline_writer", options)
    database = f"`{options.database}`"
    for statement in statements:
        target = re.search(r" ON (\S+) (TO|FROM) ", statement).group(1)
        assert target.startswith(f"{database}."), statement  # nothing outside its database
        assert "*.*" not in statement and "ACCESS MANAGEMENT" not in statement
    revoke = [s for s in statements if s.startswith("REVOKE")]
    assert revoke == [
        f"REVOKE {'ON CLUSTER `main` ' if options.cluster else ''}INSERT, ALTER TABLE, DROP "
        f"TABLE, TRUNCATE, OPTIMIZE ON {database}.`{options.cache_events_table}` FROM "
        "pipeline_writer"
    ]
