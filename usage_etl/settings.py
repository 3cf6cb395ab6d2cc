"""Operator settings (contract §6), read from the environment and validated once.

Every knob an operator can turn lives here, so the resources, the CLI and the tests agree on
names and defaults. Secrets (DSN passwords, S3 keys) are never rendered by `describe()`.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = REPO_ROOT / "sql"
SAMPLE_PRICE_BOOK = REPO_ROOT / "config" / "price_book.yaml"
SAMPLE_NODE_REGISTRY = REPO_ROOT / "config" / "nodes.yaml"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# DSN schemes the warehouse client understands: the embedded engine, or a server over HTTP(S).
DSN_SCHEMES = ("chdb", "http", "https", "clickhouse")


class SettingsError(ValueError):
    """One or more settings are wrong; the message is one line naming each variable."""


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / "dagster_home").resolve()


def default_dsn() -> str:
    return f"chdb://{dagster_home() / 'clickhouse'}"


def redact_url(url: str) -> str:
    """Drop the password (and any query secrets) from a URL before it is shown anywhere."""
    parts = urlsplit(url)
    if parts.password is None and not parts.query:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_as_of(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 UTC time like 2026-10-31T12:00:00Z, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class Settings(BaseSettings):
    """Contract §6 settings. Field names map to `USAGE_ETL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="USAGE_ETL_", extra="ignore")

    clickhouse_dsn: str = Field(default_factory=default_dsn)
    database: str = "usage"
    cache_events_table: str = "cache_events"
    landing_url: str = "s3://usage-landing/rollups"
    price_book: Path = SAMPLE_PRICE_BOOK
    node_registry: Path | None = None
    as_of: str | None = None
    # Cluster deployments: `ON CLUSTER <name>` and Replicated engines in the DDL.
    clickhouse_cluster: str | None = None
    clickhouse_replicated: bool = False
    # How long a run waits for the embedded engine held by another process.
    chdb_lock_timeout_seconds: float = 600.0
    # ClickHouse reads rollup objects from S3 itself (usage/native.py). Turn off when
    # the ClickHouse server cannot reach the landing endpoint the pipeline uses.
    native_s3_reads: bool = True
    # Bounded waits (docs/operations.md, "Timeouts and failures"). A dependency that stops
    # answering fails the step within these bounds instead of hanging the run.
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    s3_read_timeout_seconds: float = Field(default=10.0, gt=0)  # per socket read, not per file
    s3_max_attempts: int = Field(default=3, ge=1, le=10)  # per S3 request, the first included
    clickhouse_connect_timeout_seconds: int = Field(default=5, ge=1)
    clickhouse_receive_timeout_seconds: int = Field(default=30, ge=1)  # server keeps alive
    # Dagster retries a step that failed on a transient fault only while the step's attempts
    # so far, plus the backoff and one more attempt as long as the last, fit in this budget.
    retry_budget_seconds: float = Field(default=120.0, ge=0)

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc)) from None

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme if "://" in value else value.partition(":")[0]
        if scheme not in DSN_SCHEMES:
            schemes = ", ".join(f"{s}://" for s in DSN_SCHEMES)
            raise ValueError(
                f"USAGE_ETL_CLICKHOUSE_DSN must start with {schemes}, got {redact_url(value)!r}"
            )
        return value

    @field_validator("database", "cache_events_table")
    @classmethod
    def _database_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"must be a plain identifier (letters, digits, _), got {value!r}")
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_is_identifier(cls, value: str | None) -> str | None:
        if value and not IDENTIFIER.match(value):
            raise ValueError(f"USAGE_ETL_CLICKHOUSE_CLUSTER must be an identifier, got {value!r}")
        return value or None

    @field_validator("landing_url")
    @classmethod
    def _landing_is_s3(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(
                f"USAGE_ETL_LANDING_URL must look like s3://bucket/prefix, got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("as_of")
    @classmethod
    def _as_of_is_iso(cls, value: str | None) -> str | None:
        try:
            parse_as_of(value)
        except ValueError:
            raise ValueError(
                f"USAGE_ETL_AS_OF must be an ISO 8601 time like 2026-10-05T00:00:00Z, got {value!r}"
            ) from None
        return value or None

    @cached_property
    def landing_bucket(self) -> str:
        return urlsplit(self.landing_url).netloc

    @cached_property
    def landing_prefix(self) -> str:
        return urlsplit(self.landing_url).path.strip("/")

    def describe(self) -> dict[str, str]:
        """What an operator may see: everything but secrets."""
        return {
            "clickhouse_dsn": redact_url(self.clickhouse_dsn),
            "database": self.database,
            "landing_url": self.landing_url,
            "price_book": str(self.price_book),
            "as_of": self.as_of or "now",
        }


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's report as one line an operator can act on: `<variable>: what is wrong`."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error.get("loc", ())) or "settings"
        name = f"USAGE_ETL_{field.upper()}"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if message.startswith(name):  # our validators name the variable themselves
            parts.append(message)
            continue
        value = error.get("input")
        hidden = isinstance(value, dict) or "dsn" in field or "got " in message
        shown = "" if hidden else f" (got {value!r})"
        parts.append(f"{name}: {message}{shown}")
    return "; ".join(parts)


def load_settings() -> Settings:
    return Settings()
