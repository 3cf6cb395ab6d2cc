"""Operator settings (contract §6) and every other knob, read from the environment and validated.

Every knob an operator can turn lives here, so the resources, the CLI and the tests agree on
names and defaults; docs/configuration.md documents each (tests/test_settings_documented.py).
The classes differ in when they are read:

- `Settings` (contract §6): by the resources and the CLI, each time a run or command uses them.
- `LocationSettings`: once per process, when the definitions load (`location_settings()`).
- `Tuning`: once per process, when the first module that uses one is imported (`tuning()`).
- `LateFileSettings`, `AlertSettings`: by the sensors at every tick.
- `CliSettings`: by the CLI when it handles an error.

Not here, on purpose: test-only switches (`USAGE_ETL_FAULT_POINT` in crash_points.py, the
`USAGE_ETL_TEST_*` switches of tests/) and `DAGSTER_HOME` (Dagster's own, `dagster_home()`).
Secrets (DSN passwords, S3 keys, the webhook URL, the SMTP password) are never rendered by
`describe()`.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache, cached_property
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = REPO_ROOT / "sql"
SAMPLE_PRICE_BOOK = REPO_ROOT / "config" / "price_book.yaml"
SAMPLE_NODE_REGISTRY = REPO_ROOT / "config" / "nodes.yaml"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# DSN schemes the warehouse client understands: the embedded engine, or a server over HTTP(S).
DSN_SCHEMES = ("chdb", "http", "https", "clickhouse")
MIB = 2**20
PPM = 1_000_000  # relative tolerances are compared in integer parts per million: no floats
HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


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


class Knobs(BaseSettings):
    """A group of knobs: field names map to `USAGE_ETL_*` environment variables; a wrong value
    raises SettingsError, one line naming each variable."""

    model_config = SettingsConfigDict(env_prefix="USAGE_ETL_", extra="ignore")

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc)) from None


class Settings(Knobs):
    """Contract §6 settings."""

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


class LocationSettings(Knobs):
    """Read once per process, when the definitions load (`location_settings()`)."""

    # The first daily partition (YYYY-MM-DD); monthly partitions start with its month. It
    # touches no engine, it only decides how far back the UI's partition views reach.
    first_day: str = "2025-01-01"
    # Whether schedules and sensors start RUNNING or STOPPED when a Dagster instance first sees
    # them (scripts/dagster_prod.sh: running; scripts/dev.sh: stopped). A toggle in the UI is
    # stored in the instance and wins over this default.
    automation: str = "running"
    # Days per run of a daily_usage backfill (unset: the whole range in one run); checked by
    # defs/usage/days.py:backfill_policy.
    backfill_days_per_run: str | None = None

    @field_validator("first_day", mode="before")
    @classmethod
    def _first_day_is_a_day(cls, value: str | None) -> str:
        value = (value or "2025-01-01").strip()
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(
                f"USAGE_ETL_FIRST_DAY must be a day like 2026-10-01, got {value!r}"
            ) from None

    @field_validator("automation", mode="before")
    @classmethod
    def _automation_is_running_or_stopped(cls, value: str | None) -> str:
        value = (value or "running").strip().lower()
        if value not in ("running", "stopped"):
            raise ValueError(f"USAGE_ETL_AUTOMATION must be running or stopped, got {value!r}")
        return value


@cache
def location_settings() -> LocationSettings:
    return LocationSettings()


class Tuning(Knobs):
    """Engine sizes, read once per process (`tuning()`), when the first module that uses one is
    imported; the modules keep them as constants (tests lower those to provoke edge cases)."""

    native_chunk_rows: int = (
        50_000_000  # rows per native INSERT … SELECT FROM s3() (usage/native.py)
    )
    native_chunk_bytes: int = 128 << 20  # listed NDJSON.gz bytes per native chunk
    # Rows of small Parquet files staged per chunk before validation (usage/native.py); 0: never
    native_stage_rows: int = Field(default=500_000, ge=0)
    # Embedded engine: small files are fetched once by Python and read locally (usage/fetch.py)
    native_fetch: bool = True
    dedupe_bucket_rows: int = (
        20_000_000  # staged rows per duplicate-finding pass (usage/publish.py)
    )
    group_bucket_rows: int = 1_800_000  # rows per hourly aggregation pass (usage/publish.py)
    max_decompressed_bytes: int = 2 << 30  # per file read by Python (usage/readers.py)
    ingest_batch_rows: int = 250_000  # rows per staging insert (usage/load.py)
    # Days a range run publishes (and checks for exactness) at once (defs/usage/days.py)
    range_parallel_days: int = Field(default=2, ge=1, le=8)
    log_slow_queries_seconds: float | None = None  # unset: no slow-statement log


@cache
def tuning() -> Tuning:
    return Tuning()


class LateFileSettings(Knobs):
    """Read by the late_rollup_files sensor at every tick (automation/late_files.py)."""

    late_lookback_days: int = 35  # days back from yesterday the sensor looks at
    late_days_per_tick: int = 7  # day prefixes listed per tick, round-robin


class DaemonSettings(Knobs):
    """Read once by the project's daemon entry point (usage_etl/daemon.py) before Dagster's."""

    # Seconds between the backfill daemon's iterations: how long a launched backfill waits
    # for its first run (Dagster 1.13's fixed loop is 30 s).
    daemon_interval_seconds: float = Field(default=2.0, gt=0, le=300)


class CliSettings(Knobs):
    """Read by the CLI when it reports an error (cli/errors.py)."""

    debug: str = ""  # anything but "" or "0": tracebacks, as --debug

    @property
    def debug_on(self) -> bool:
        return self.debug not in ("", "0")


class Tolerances(BaseSettings):
    """Where a difference becomes a finding. A group is flagged only when BOTH its relative and
    its absolute difference exceed the limits, so small noisy projects do not page anyone.

    Environment: `USAGE_ETL_RECONCILIATION_ERROR_RELATIVE=0.005` etc., read when a
    reconciliation check runs (its run config overrides each, defs/reconciliation/checks.py).
    """

    model_config = SettingsConfigDict(env_prefix="USAGE_ETL_RECONCILIATION_", extra="ignore")

    # Rollups are billing-grade and cache events a lower bound: rollups below cache is a leak.
    error_relative: Decimal = Decimal("0.005")
    error_absolute_bytes: int = Field(default=1 * MIB, ge=0)
    # Rollups above cache: the analytics queue dropped events, or something counts twice.
    warn_relative: Decimal = Decimal("0.05")
    warn_absolute_bytes: int = Field(default=64 * MIB, ge=0)
    # How many of the worst groups the check metadata lists.
    top_n: int = Field(default=10, ge=1, le=1000)

    @field_validator("error_relative", "warn_relative")
    @classmethod
    def _whole_ppm(cls, value: Decimal) -> Decimal:
        if value < 0 or value >= 1 or (value * PPM) % 1 != 0:
            raise ValueError(f"must be in [0, 1) with at most 6 decimals, got {value}")
        return value

    def parameters(self) -> dict[str, int]:
        """The limits as integers for the SQL comparisons (`rollup * 1e6 < cache * keep`)."""
        return {
            "error_keep_ppm": PPM - int(self.error_relative * PPM),
            "error_abs": self.error_absolute_bytes,
            "warn_over_ppm": PPM + int(self.warn_relative * PPM),
            "warn_abs": self.warn_absolute_bytes,
        }


def url_host(url: str | None) -> str:
    """What may be logged of a URL: its host (a webhook URL's path is often its token)."""
    if not url:
        return "-"
    return urlsplit(url).hostname or "?"


class AlertSettings(BaseSettings):
    """Where alerts go and when a partition counts as late; read by the alert sensors at each
    tick, so a changed destination applies without a reload. Secrets (the webhook URL can carry
    a token, the SMTP password) are never rendered: `describe()` shows the webhook's host only.
    """

    # hide_input_in_errors: a rejected webhook URL must not be echoed (it may hold a token).
    model_config = SettingsConfigDict(
        env_prefix="USAGE_ETL_", extra="ignore", hide_input_in_errors=True
    )

    # Destinations: none, either or both.
    alert_webhook_url: SecretStr | None = None
    alert_email_to: str | None = None  # comma-separated addresses
    alert_email_from: str = "usage-etl@localhost"
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    alert_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Links in alerts point at this Dagster UI.
    ui_url: str = "http://127.0.0.1:3000"
    # Deadlines (UTC).
    usage_deadline: str = "07:30"  # yesterday's usage_daily published by this time of day
    invoice_grace_days: int | None = Field(default=None, ge=0)  # None: the price book's
    invoice_deadline_extra_days: int = Field(default=1, ge=0)  # after period_end + grace_days
    # How many due partitions each deadline check looks at (the latest and those before it).
    deadline_lookback_days: int = Field(default=7, ge=1, le=62)
    deadline_lookback_months: int = Field(default=3, ge=1, le=24)

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Name the host only: the rest of the URL may be a token.
            raise ValueError(
                f"USAGE_ETL_ALERT_WEBHOOK_URL must be an http(s) URL (host {parts.hostname!r})"
            )
        return value

    @field_validator("usage_deadline")
    @classmethod
    def _deadline_is_hh_mm(cls, value: str) -> str:
        if not HH_MM.match(value):
            raise ValueError(f"USAGE_ETL_USAGE_DEADLINE must be HH:MM (UTC), got {value!r}")
        return value

    @field_validator("ui_url")
    @classmethod
    def _ui_url_has_no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def webhook_url(self) -> str | None:
        return self.alert_webhook_url.get_secret_value() if self.alert_webhook_url else None

    @property
    def email_recipients(self) -> list[str]:
        return [a.strip() for a in (self.alert_email_to or "").split(",") if a.strip()]

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host and self.email_recipients)

    @property
    def has_destination(self) -> bool:
        return bool(self.webhook_url) or self.email_enabled

    @property
    def usage_deadline_time(self) -> time:
        hours, minutes = self.usage_deadline.split(":")
        return time(int(hours), int(minutes))

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/runs/{run_id}"

    def asset_url(self, asset: str) -> str:
        return f"{self.ui_url}/assets/{asset}"

    def describe(self) -> dict[str, str]:
        return {
            "webhook_host": url_host(self.webhook_url),
            "email_to": ", ".join(self.email_recipients) or "-",
            "smtp": f"{self.smtp_host}:{self.smtp_port}" if self.smtp_host else "-",
            "ui_url": self.ui_url,
            "usage_deadline": f"{self.usage_deadline} UTC",
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
