"""Alerting settings: where alerts go and when a partition counts as late.

A class of its own (same `USAGE_ETL_` prefix as `usage_etl.settings.Settings`), read by the
alert sensors at each tick, so a changed destination applies without a reload. Secrets (the
webhook URL can carry a token, the SMTP password) are never rendered: `describe()` shows the
webhook's host only.
"""

from __future__ import annotations

import re
from datetime import time
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def url_host(url: str | None) -> str:
    """What may be logged of a URL: its host (a webhook URL's path is often its token)."""
    if not url:
        return "-"
    return urlsplit(url).hostname or "?"


class AlertSettings(BaseSettings):
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
