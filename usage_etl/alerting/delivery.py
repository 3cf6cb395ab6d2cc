"""Deliver one alert to a webhook (Slack-compatible JSON) and/or by email (SMTP).

Pure delivery: no Dagster here. Each destination gets one attempt bounded by
`alert_timeout_seconds`; a failure is logged (the webhook's host only, never its URL, which may
hold a token) and reported back, never raised: an unreachable receiver must not fail the
sensor that raises the alert.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage

from usage_etl.settings import AlertSettings, url_host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One thing an operator must act on.

    kind: `run_failure`, `check_failure`, `deadline_missed` or `deadline_resolved`.
    partition: the day (`YYYY-MM-DD`) or billing period (`YYYY-MM`) concerned, if any.
    cause: one line saying what happened.
    """

    kind: str
    title: str
    cause: str
    asset: str | None = None
    partition: str | None = None
    job: str | None = None
    run_id: str | None = None
    url: str | None = None
    action: str | None = None

    @property
    def text(self) -> str:
        lines = [f"[usage_etl] {self.title}", f"Cause: {self.cause}"]
        if self.action:
            lines.append(f"Do: {self.action}")
        if self.url:
            lines.append(self.url)
        return "\n".join(lines)

    def payload(self) -> dict:
        """Slack-compatible (`text`) plus the fields as structured data for other receivers."""
        return {"text": self.text, **{k: v for k, v in asdict(self).items() if v is not None}}


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)  # "webhook", "email"
    failed: list[str] = field(default_factory=list)  # one line per failure, secret-free

    @property
    def complete(self) -> bool:
        """Nothing failed (also true when no destination is configured)."""
        return not self.failed


def post_webhook(url: str, payload: dict, timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def send_email(settings: AlertSettings, alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"] = f"[usage_etl] {alert.title}"
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(settings.email_recipients)
    body = [alert.text, ""]
    body += [f"{k}: {v}" for k, v in asdict(alert).items() if v is not None and k != "title"]
    message.set_content("\n".join(body) + "\n")
    timeout = settings.alert_timeout_seconds
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user and settings.smtp_password:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)


def _reason(exc: BaseException) -> str:
    """The failure without anything that may embed the URL (urllib errors can)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return type(exc.reason).__name__ if isinstance(exc.reason, BaseException) else "URLError"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    return type(exc).__name__


def _log(logger, level: str, message: str) -> None:
    """To this module's logger (the daemon's log) and to the caller's (a sensor tick's log,
    shown in the UI)."""
    getattr(log, level)(message)
    if logger is not None and logger is not log:
        getattr(logger, level)(message)


def deliver(
    alert: Alert, settings: AlertSettings, logger=None, skip: set[str] | frozenset = frozenset()
) -> DeliveryReport:
    """Send `alert` to every configured destination not in `skip`; never raises."""
    report = DeliveryReport()
    if settings.webhook_url:
        host = url_host(settings.webhook_url)
        if "webhook" in skip:
            report.failed.append(f"webhook {host}: skipped, it failed earlier on this tick")
        else:
            try:
                post_webhook(settings.webhook_url, alert.payload(), settings.alert_timeout_seconds)
                report.delivered.append("webhook")
            except Exception as exc:
                report.failed.append(f"webhook {host}: {_reason(exc)}")
    if settings.email_enabled:
        if "email" in skip:
            report.failed.append(f"email via {settings.smtp_host}: skipped, it failed earlier")
        else:
            try:
                send_email(settings, alert)
                report.delivered.append("email")
            except Exception as exc:
                report.failed.append(f"email via {settings.smtp_host}: {_reason(exc)}")
    for failure in report.failed:
        _log(logger, "warning", f"alert not delivered ({failure}): {alert.title}")
    if report.delivered:
        _log(logger, "info", f"alert sent ({', '.join(report.delivered)}): {alert.title}")
    elif not settings.has_destination:
        _log(logger, "warning", f"no alert destination configured; alert: {alert.text}")
    return report


class Courier:
    """Delivers the alerts of one sensor tick. A destination that fails is not tried again on
    the same tick, so a tick spends at most one timeout per destination (the daemon gives a
    sensor evaluation about a minute)."""

    def __init__(self, settings: AlertSettings, logger=None):
        self.settings = settings
        self.logger = logger
        self.down: set[str] = set()

    def send(self, alert: Alert) -> bool:
        """True once the alert reached at least one destination, or there is none to reach
        (the tick log has it); False: retry it later."""
        report = deliver(alert, self.settings, self.logger, self.down)
        self.down.update(f.split(" ", 1)[0] for f in report.failed)
        return bool(report.delivered) or not self.settings.has_destination
