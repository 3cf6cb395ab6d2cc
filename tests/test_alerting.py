"""Alerts reach a real HTTP receiver and a real SMTP receiver on 127.0.0.1.

The sensors are evaluated the way the daemon does (Dagster's sensor contexts) against a real
DagsterInstance; the failed run is a real daily_usage run on SeaweedFS and chDB.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from rollup_files import Landing, parquet_bytes, rollup, run_daily

from usage_etl.alerting.causes import run_failure_cause
from usage_etl.alerting.deadlines import latest_due_day, latest_due_period
from usage_etl.alerting.delivery import Alert, deliver
from usage_etl.crash_points import on_fault
from usage_etl.defs.alerting.sensors import (
    alert_on_check_failure,
    alert_on_run_failure,
    partition_deadlines,
)
from usage_etl.defs.resources import ClockResource, PriceBookResource
from usage_etl.periods import Period
from usage_etl.settings import AlertSettings
from usage_etl.warehouse.client import WarehouseError

DAY = date(2026, 10, 5)
TOKEN = "T0001/B0002/sekrit-token"
UI = "http://dagster.example:3000"


class Webhook:
    """A Slack-style receiver: records every JSON body POSTed to it."""

    def __init__(self):
        self.posts: list[dict] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append({"path": self.path, "json": json.loads(body)})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, kind: str | None = None) -> list[dict]:
        return [p["json"] for p in self.posts if kind is None or p["json"]["kind"] == kind]


class SmtpReceiver:
    """Just enough SMTP (RFC 5321 happy path) to accept what smtplib sends."""

    def __init__(self):
        self.messages: list[dict] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                self._session(conn, lines)

    def _session(self, conn, lines):
        conn.sendall(b"220 test ESMTP\r\n")
        mail: dict = {"to": []}
        for raw in lines:
            command = raw.decode().strip()
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "DATA":
                conn.sendall(b"354 go ahead\r\n")
                data = []
                for line in lines:
                    if line == b".\r\n":
                        break
                    data.append(line.decode())
                mail["data"] = "".join(data)
                self.messages.append(mail)
                mail = {"to": []}
                conn.sendall(b"250 queued\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                if verb == "MAIL":
                    mail["from"] = command
                elif verb == "RCPT":
                    mail["to"].append(command)
                conn.sendall(b"250 ok\r\n")

    def close(self):
        self.sock.close()


@pytest.fixture
def webhook():
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp():
    receiver = SmtpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def alert_env(monkeypatch, webhook, smtp):
    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("USAGE_ETL_ALERT_EMAIL_TO", "ops@example.com, finance@example.com")
    monkeypatch.setenv("USAGE_ETL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("USAGE_ETL_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("USAGE_ETL_UI_URL", UI + "/")
    # Judge the latest two due days and the latest due month (defaults: 7 and 3).
    monkeypatch.setenv("USAGE_ETL_DEADLINE_LOOKBACK_DAYS", "2")
    monkeypatch.setenv("USAGE_ETL_DEADLINE_LOOKBACK_MONTHS", "1")
    for name in ("USAGE_ETL_USAGE_DEADLINE", "USAGE_ETL_INVOICE_GRACE_DAYS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


class DeadlineTicks:
    """partition_deadlines evaluated as the daemon does: cursor carried between ticks, its check
    evaluations stored in the instance."""

    def __init__(self, instance):
        self.instance = instance
        self.cursor = None

    def __call__(self, at: datetime) -> dg.SensorResult:
        resources = {
            "clock": ClockResource(as_of=at.isoformat()),
            "price_book": PriceBookResource(),
        }
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=resources
        ) as context:
            result = partition_deadlines(context)
        self.cursor = result.cursor
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        return result


def publish(instance, asset: str, partition: str, **metadata) -> None:
    """What a run that materializes the partition leaves in the instance."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset, partition=partition, metadata=metadata)
    )


def on_time(instance) -> None:
    """Everything due before 2026-10-06 07:30 is in: only 2026-10-05 can be late."""
    for day in ("2026-10-03", "2026-10-04"):
        publish(instance, "usage_daily", day)
    publish(instance, "invoice_line_items", "2026-09-01", status="final")


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


# --- a failed run ---------------------------------------------------------------------------


def test_a_failed_daily_usage_run_alerts_once_with_its_day_and_cause(
    usage_env, s3_server, settings, warehouse, alert_env, webhook, smtp
):
    # The warehouse refuses the day's swap with a permanent error (not retried): the run fails.
    landing = Landing(s3_server, settings)
    landing.put("a.parquet", parquet_bytes([rollup("e1", day=DAY)]), day=DAY)
    with (
        dg.instance_for_test(temp_dir=usage_env["DAGSTER_HOME"]) as instance,
        on_fault("publish.before_swap", _refuse_swap),
    ):
        result = run_daily(DAY.isoformat(), instance)
        assert not result.success
        with dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ) as context:
            alert_on_run_failure(context)

    [body] = webhook.bodies()
    run_id = result.dagster_run.run_id
    assert body["kind"] == "run_failure" and body["job"] == "daily_usage"
    assert body["partition"] == DAY.isoformat() and body["run_id"] == run_id
    assert body["url"] == f"{UI}/runs/{run_id}"
    # The failed step and the first line of its error, not Dagster's wrapper text.
    step_error = next(e for e in result.all_events if e.is_step_failure)
    expected = step_error.step_failure_data.user_failure_data.description.splitlines()[0]
    assert step_error.step_key == "published_usage"
    assert expected.startswith(f"publishing {DAY.isoformat()} (nothing was published)")
    assert body["cause"].startswith(f"published_usage: {expected[:120]}")
    assert "\n" not in body["cause"] and "Exceeded max_retries" not in body["cause"]
    assert body["text"].startswith(f"[usage_etl] daily_usage failed for {DAY.isoformat()}")
    [mail] = smtp.messages
    assert len(mail["to"]) == 2 and run_id in mail["data"] and DAY.isoformat() in mail["data"]


def _refuse_swap() -> None:
    raise WarehouseError("injected: the table's disk is read-only", transient=False)


def test_the_cause_of_a_step_that_used_up_its_retries_is_its_own_error():
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
    def flaky():
        raise ConnectionResetError("S3 reset the connection\ntraceback details")

    @dg.job
    def job():
        flaky()

    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    failures = [e for e in result.all_events if e.is_step_failure]
    assert "Exceeded max_retries" in failures[0].step_failure_data.error.message
    cause = run_failure_cause(failures, result.get_run_failure_event().message)
    assert cause == "flaky: ConnectionResetError: S3 reset the connection"


# --- missed deadlines -----------------------------------------------------------------------


def test_a_missed_usage_deadline_alerts_once_then_once_resolved(instance, alert_env, webhook):
    tick = DeadlineTicks(instance)
    on_time(instance)

    before = tick(at(date(2026, 10, 6), 7, 29))  # 2026-10-05 is due at 07:30
    assert webhook.posts == []
    assert [(e.check_name, e.passed) for e in before.asset_events] == [
        ("published_by_deadline", True), ("final_by_deadline", True),
    ]  # fmt: skip
    assert before.asset_events[0].metadata["judged"].value == ["2026-10-03", "2026-10-04"]

    missed = tick(at(date(2026, 10, 6), 7, 31))
    [alert] = webhook.bodies()
    assert alert["kind"] == "deadline_missed" and alert["asset"] == "usage_daily"
    assert alert["partition"] == "2026-10-05"
    assert "not published by 2026-10-06 07:30 UTC" in alert["cause"]
    assert "no daily_usage run for it yet" in alert["cause"]
    assert alert["url"] == f"{UI}/assets/usage_daily"
    [evaluation] = missed.asset_events
    assert (evaluation.check_name, evaluation.passed) == ("published_by_deadline", False)
    assert evaluation.metadata["overdue"].value == ["2026-10-05"]

    assert tick(at(date(2026, 10, 6), 7, 36)).asset_events == []
    assert len(webhook.posts) == 1  # re-evaluation does not repeat the alert

    publish(instance, "usage_daily", "2026-10-05")
    resolved = tick(at(date(2026, 10, 6), 9, 0))
    assert [b["kind"] for b in webhook.bodies()] == ["deadline_missed", "deadline_resolved"]
    assert webhook.bodies()[1]["partition"] == "2026-10-05"
    assert [e.passed for e in resolved.asset_events] == [True]
    tick(at(date(2026, 10, 6), 9, 5))
    assert len(webhook.posts) == 2

    key = dg.AssetCheckKey(dg.AssetKey("usage_daily"), "published_by_deadline")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert latest.event.asset_check_evaluation.passed  # the instance holds the current result


def test_a_day_still_missing_keeps_the_check_failing_after_the_next_day(
    instance, alert_env, webhook
):
    tick = DeadlineTicks(instance)
    on_time(instance)
    tick(at(date(2026, 10, 6), 7, 31))  # 2026-10-05 missed
    publish(instance, "usage_daily", "2026-10-06")  # the next day is on time
    [evaluation] = tick(at(date(2026, 10, 7), 7, 31)).asset_events
    assert not evaluation.passed and evaluation.metadata["overdue"].value == ["2026-10-05"]
    assert [b["partition"] for b in webhook.bodies()] == ["2026-10-05"]  # not alerted again


def test_invoices_not_final_a_day_after_the_grace_period_alert(instance, alert_env, webhook):
    tick = DeadlineTicks(instance)
    for day in ("2026-11-02", "2026-11-03"):
        publish(instance, "usage_daily", day)
    publish(instance, "invoice_line_items", "2026-09-01", status="final")
    publish(instance, "invoice_line_items", "2026-10-01", status="draft")
    # Sample price book: grace_days 3, so October is due final at 2026-11-04 and alerted at
    # 2026-11-05 00:00 (one more day).
    tick(at(date(2026, 11, 4), 23, 59))
    assert webhook.bodies() == []
    tick(at(date(2026, 11, 5), 0, 1))
    [alert] = webhook.bodies()
    assert alert["asset"] == "invoice_line_items" and alert["partition"] == "2026-10"
    assert "not final by 2026-11-05 00:00 UTC" in alert["cause"] and "still draft" in alert["cause"]
    assert "monthly_invoices" in alert["action"] and "2026-10-01" in alert["action"]

    publish(instance, "invoice_line_items", "2026-10-01", status="final")
    tick(at(date(2026, 11, 5), 7, 10))
    assert [b["kind"] for b in webhook.bodies()] == ["deadline_missed", "deadline_resolved"]


def test_a_failed_latest_run_is_named_and_linked_in_the_miss(instance, alert_env, webhook):
    from usage_etl.definitions import defs

    job = defs().resolve_job_def("daily_usage")
    run = instance.create_run_for_job(job_def=job, tags={"dagster/partition": "2026-10-05"})
    instance.report_run_failed(run)
    on_time(instance)

    DeadlineTicks(instance)(at(date(2026, 10, 6), 8, 0))
    [alert] = webhook.bodies()
    assert f"latest daily_usage run {run.run_id[:8]} is FAILURE" in alert["cause"]
    assert alert["url"] == f"{UI}/runs/{run.run_id}"


def test_a_down_receiver_is_logged_never_raised_and_retried(
    instance, alert_env, webhook, monkeypatch, caplog
):
    monkeypatch.delenv("USAGE_ETL_SMTP_HOST")
    down = f"http://127.0.0.1:{closed_port()}/services/{TOKEN}"
    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", down)
    for day in ("2026-10-03", "2026-10-04"):
        publish(instance, "usage_daily", day)
    tick = DeadlineTicks(instance)  # 2026-10-05 and September's invoices will both be late

    with caplog.at_level(logging.WARNING):
        result = tick(at(date(2026, 10, 6), 7, 31))
    assert [e.passed for e in result.asset_events] == [False, False]
    failures = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(failures) == 2 and "webhook 127.0.0.1: " in failures[0]
    assert "skipped" in failures[1]  # one timeout per destination and tick, not one per alert
    assert all("sekrit" not in r.getMessage() for r in caplog.records)

    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", webhook.url)  # receiver back
    tick(at(date(2026, 10, 6), 7, 36))
    tick(at(date(2026, 10, 6), 7, 41))
    assert sorted((b["kind"], b["partition"]) for b in webhook.bodies()) == [
        ("deadline_missed", "2026-09"), ("deadline_missed", "2026-10-05"),
    ]  # fmt: skip


def test_delivery_to_nothing_reachable_returns_failures_without_secrets(monkeypatch):
    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{closed_port()}/{TOKEN}")
    monkeypatch.setenv("USAGE_ETL_ALERT_EMAIL_TO", "ops@example.com")
    monkeypatch.setenv("USAGE_ETL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("USAGE_ETL_SMTP_PORT", str(closed_port()))
    monkeypatch.setenv("USAGE_ETL_ALERT_TIMEOUT_SECONDS", "2")
    seen: list[str] = []

    class Log:
        def warning(self, message):
            seen.append(message)

        info = warning

    report = deliver(Alert(kind="run_failure", title="t", cause="c"), AlertSettings(), Log())
    assert report.delivered == [] and len(report.failed) == 2 and not report.complete
    assert len(seen) == 2 and all("sekrit" not in line for line in seen + report.failed)


# --- failed checks --------------------------------------------------------------------------


def test_a_failed_error_check_alerts_once_and_warn_checks_do_not(instance, alert_env, webhook):
    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-10-01"))
    def usage_daily():
        return 1

    @dg.asset_check(asset=usage_daily, blocking=False)
    def totals_match():
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.ERROR,
            description="usage_daily differs from its staged rollups: re-run\ndetails",
        )  # fmt: skip

    @dg.asset_check(asset=usage_daily, blocking=False)
    def a_warning():
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)

    definitions = dg.Definitions(assets=[usage_daily], asset_checks=[totals_match, a_warning])
    job = definitions.resolve_implicit_global_asset_job_def()

    def run(day):
        return job.execute_in_process(instance=instance, partition_key=day)

    def evaluate(result):
        with dg.build_run_status_sensor_context(
            sensor_name="alert_on_check_failure",
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ) as context:
            alert_on_check_failure(context)

    failed = run("2026-10-05")
    assert failed.success  # non-blocking checks: the run succeeds, its ERROR check failed
    evaluate(failed)
    [alert] = webhook.bodies()
    assert alert["kind"] == "check_failure" and alert["partition"] == "2026-10-05"
    assert alert["title"] == "check totals_match failed on usage_daily for 2026-10-05"
    assert alert["cause"] == "usage_daily differs from its staged rollups: re-run"
    assert alert["url"] == f"{UI}/runs/{failed.run_id}"


def test_a_run_failed_by_a_blocking_check_alerts_once_naming_the_check(
    instance, alert_env, webhook
):
    @dg.asset
    def usage_daily():
        return 1

    @dg.asset(deps=[usage_daily])
    def invoice_line_items():
        return 2

    @dg.asset_check(asset=usage_daily, blocking=True)
    def is_exact():
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.ERROR,
            description="usage_daily differs from its staged rollups",
        )  # fmt: skip

    definitions = dg.Definitions(assets=[usage_daily, invoice_line_items], asset_checks=[is_exact])
    job = definitions.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    with dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ) as context:
        alert_on_run_failure(context)
    [alert] = webhook.bodies()
    assert alert["kind"] == "run_failure"
    assert alert["cause"].endswith(
        "failed checks: is_exact on usage_daily: usage_daily differs from its staged rollups"
    )


# --- settings and deadlines -----------------------------------------------------------------


def test_deadlines():
    assert latest_due_day(at(date(2026, 10, 6), 7, 29), AlertSettings().usage_deadline_time) == (
        date(2026, 10, 4)
    )
    assert latest_due_day(at(date(2026, 10, 6), 7, 30), AlertSettings().usage_deadline_time) == (
        date(2026, 10, 5)
    )
    assert latest_due_period(at(date(2026, 11, 4), 23, 59), 3, 1) == Period(date(2026, 9, 1))
    assert latest_due_period(at(date(2026, 11, 5), 0, 0), 3, 1) == Period(date(2026, 10, 1))
    assert latest_due_period(at(date(2026, 11, 1), 0, 0), 0, 0) == Period(date(2026, 10, 1))


def test_settings_never_render_the_webhook_token(monkeypatch):
    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", f"https://hooks.example.com/{TOKEN}")
    settings = AlertSettings()
    assert settings.describe()["webhook_host"] == "hooks.example.com"
    assert "sekrit" not in repr(settings) and "sekrit" not in str(settings.describe())
    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", f"ftp://hooks.example.com/{TOKEN}")
    with pytest.raises(ValueError) as error:
        AlertSettings()
    assert "sekrit" not in str(error.value)
    monkeypatch.setenv("USAGE_ETL_ALERT_WEBHOOK_URL", "")
    monkeypatch.setenv("USAGE_ETL_USAGE_DEADLINE", "7:30")
    with pytest.raises(ValueError, match="HH:MM"):
        AlertSettings()


def test_deadline_checks_are_defined_but_left_out_of_the_contract_jobs():
    from usage_etl.definitions import defs

    definitions = defs()
    graph = definitions.resolve_asset_graph()
    keys = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {("usage_daily", "published_by_deadline")} <= keys
    assert {("invoice_line_items", "final_by_deadline")} <= keys
    for job in ("daily_usage", "monthly_invoices"):
        job_graph = definitions.resolve_job_def(job).asset_layer.asset_graph
        names = {k.name for k in job_graph.asset_check_keys}
        assert names and not names & {"published_by_deadline", "final_by_deadline"}
    sensors = {s.name: s for s in definitions.sensors}
    for name in ("alert_on_run_failure", "alert_on_check_failure", "partition_deadlines"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING


def test_a_deadline_check_executed_by_hand_reads_the_instance(instance, monkeypatch):
    """What "Execute" on the asset's Checks tab runs: no ClickHouse, the clock's time."""
    from usage_etl.definitions import defs

    monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", "http://127.0.0.1:9/unreachable")
    monkeypatch.setenv("USAGE_ETL_DEADLINE_LOOKBACK_DAYS", "2")
    monkeypatch.setenv("USAGE_ETL_AS_OF", "2026-10-06T08:00:00Z")
    key = dg.AssetCheckKey(dg.AssetKey("usage_daily"), "published_by_deadline")
    job = (
        defs()
        .resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection=set(), asset_check_selection={key})
    )

    def execute() -> dg.AssetCheckEvaluation:
        result = job.execute_in_process(instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation

    publish(instance, "usage_daily", "2026-10-04")
    late = execute()
    assert not late.passed and late.metadata["overdue"].value == ["2026-10-05"]
    publish(instance, "usage_daily", "2026-10-05")
    assert execute().passed
