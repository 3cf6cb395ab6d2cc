"""Settings: unsafe identifiers refused, passwords redacted."""

from __future__ import annotations

import pytest

from usage_etl.settings import Settings, redact_url


def test_settings_reject_unsafe_identifiers(monkeypatch):
    monkeypatch.setenv("USAGE_ETL_DATABASE", "usage; DROP TABLE x")
    with pytest.raises(ValueError, match="identifier"):
        Settings()


def test_redaction_hides_passwords():
    assert redact_url("https://finance:s3cr3t@ch.example:8443/db") == (
        "https://finance:***@ch.example:8443/db"
    )
    assert (
        "s3cr3t"
        not in Settings(clickhouse_dsn="http://u:s3cr3t@h:8123").describe()["clickhouse_dsn"]
    )
