"""Alert sensors: a failed run, a failed ERROR check, a missed partition deadline.

Each delivers to the webhook and/or email of AlertSettings (usage_etl/settings.py), once per
failure: the two run-status sensors ride Dagster's own run-status cursor (one evaluation per
finished run); partition_deadlines keeps the late partitions it alerted in its cursor. None opens
ClickHouse. A delivery that fails is logged on the tick and never fails the sensor; a missed
deadline whose alert reached no destination is retried on the next tick.
"""

from __future__ import annotations

import json

import dagster as dg

from usage_etl.alerting.causes import first_line, run_failure_cause
from usage_etl.alerting.delivery import Alert, Courier
from usage_etl.automation.tags import DAY_TAG, MONTH_TAG
from usage_etl.defs.alerting.checks import invoice_grace_days
from usage_etl.defs.alerting.verdicts import Overdue, Verdict, invoice_verdict, usage_verdict
from usage_etl.defs.resources import ClockResource, PriceBookResource
from usage_etl.defs.vocabulary import (
    DAILY_USAGE_JOB,
    INVOICE_DEADLINE_CHECK,
    MONTHLY_INVOICES_JOB,
    PARTITION_TAG,
    USAGE_DEADLINE_CHECK,
    sensor_status,
)
from usage_etl.settings import AlertSettings

DEADLINE_CHECKS = {USAGE_DEADLINE_CHECK, INVOICE_DEADLINE_CHECK}


def _partition_label(tags) -> str | None:
    return tags.get(DAY_TAG) or tags.get(MONTH_TAG) or tags.get(PARTITION_TAG)


def failed_error_checks(instance: dg.DagsterInstance, run_id: str) -> list:
    """The run's failed ERROR-severity check evaluations (deadline checks excluded: the
    partition_deadlines sensor alerts those itself)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return [
        e
        for e in evaluations
        if not e.passed
        and e.severity == dg.AssetCheckSeverity.ERROR
        and e.check_name not in DEADLINE_CHECKS
    ]


def _check_line(evaluation) -> str:
    return (
        f"{evaluation.check_name} on {evaluation.asset_key.to_user_string()}: "
        f"{first_line(evaluation.description) or 'failed'}"
    )


def run_failure_alert(
    run: dg.DagsterRun, step_failures, failure_message, failed_checks, settings
) -> Alert:
    partition = _partition_label(run.tags)
    where = f" for {partition}" if partition else ""
    cause = run_failure_cause(step_failures, failure_message)
    if failed_checks:
        cause += " | failed checks: " + "; ".join(_check_line(e) for e in failed_checks)
    return Alert(
        kind="run_failure",
        title=f"{run.job_name} failed{where}",
        cause=cause,
        partition=partition,
        job=run.job_name,
        run_id=run.run_id,
        url=settings.run_url(run.run_id),
        action="fix the cause, then re-run the partition (docs/operations.md, "
        "'What each alert means and what to do')",
    )


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    minimum_interval_seconds=30,
    default_status=sensor_status(),
    description="One alert per failed run of this code location (daily_usage, "
    "monthly_invoices, warehouse_maintenance, runs launched from the asset graph): job, "
    "partition, the failed step's error, the run's failed ERROR checks, link to the run. "
    "Destinations: USAGE_ETL_ALERT_WEBHOOK_URL and/or USAGE_ETL_ALERT_EMAIL_TO.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    settings = AlertSettings()
    run = context.dagster_run
    alert = run_failure_alert(
        run,
        context.get_step_failure_events(),
        context.failure_event.message,
        failed_error_checks(context.instance, run.run_id),
        settings,
    )
    Courier(settings, context.log).send(alert)


def check_failure_alert(run: dg.DagsterRun, evaluation, settings: AlertSettings) -> Alert:
    asset = evaluation.asset_key.to_user_string()
    partition = evaluation.partition or _partition_label(run.tags)
    where = f" for {partition}" if partition else ""
    return Alert(
        kind="check_failure",
        title=f"check {evaluation.check_name} failed on {asset}{where}",
        cause=first_line(evaluation.description) or "the check failed (no description)",
        asset=asset,
        partition=partition,
        job=run.job_name,
        run_id=run.run_id,
        url=settings.run_url(run.run_id),
        action="read the check's description and metadata (asset → Checks, or the run); "
        "docs/operations.md, 'Read a failed check'",
    )


@dg.run_status_sensor(
    name="alert_on_check_failure",
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=30,
    default_status=sensor_status(),
    description="One alert per failed ERROR-severity asset check in a run that otherwise "
    "succeeded (a failed run's checks ride on its run-failure alert): asset, check, "
    "partition, the check's description, link to the run. WARN checks do not alert.",
)
def alert_on_check_failure(context: dg.RunStatusSensorContext) -> None:
    settings = AlertSettings()
    run = context.dagster_run
    courier = Courier(settings, context.log)
    for evaluation in failed_error_checks(context.instance, run.run_id):
        courier.send(check_failure_alert(run, evaluation, settings))


class DeadlineCursor:
    """What partition_deadlines already said.

    `reported[check]`: the signature of the last result reported (a result is reported when it
    changes). `alerted[check][partition]`: overdue partitions and whether their alert was
    delivered (an undelivered one is retried each tick).
    """

    def __init__(self, raw: str | None):
        data = json.loads(raw) if raw else {}
        self.reported: dict[str, str] = data.get("reported", {})
        self.alerted: dict[str, dict[str, bool]] = data.get("alerted", {})

    def dump(self) -> str:
        return json.dumps({"reported": self.reported, "alerted": self.alerted}, sort_keys=True)


def _rerun_command(verdict: Verdict, overdue: list[Overdue]) -> str:
    usage = verdict.check_name == USAGE_DEADLINE_CHECK
    job = DAILY_USAGE_JOB if usage else MONTHLY_INVOICES_JOB
    keys = ", ".join(o.key for o in overdue[1:])
    command = (
        f"dagster job execute -m usage_etl.definitions -j {job} --tags "
        f'\'{{"dagster/partition": "{overdue[0].key}"}}\''
    )
    if len(overdue) > 1:
        command += f" (likewise for {keys})"
    if not usage:
        command += " once the blockers named by its last run are cleared"
    return command


def miss_alert(verdict: Verdict, overdue: list[Overdue], settings: AlertSettings) -> Alert:
    """One alert for the partitions of one check that became overdue on this tick."""
    labels = ", ".join(o.label for o in overdue)
    what = "not published" if verdict.check_name == USAGE_DEADLINE_CHECK else "not final"
    noun = "usage_daily" if verdict.check_name == USAGE_DEADLINE_CHECK else "invoices of"
    run_id = overdue[0].last_run_id
    return Alert(
        kind="deadline_missed",
        title=f"{noun} {labels} {what} by the deadline",
        cause=overdue[0].cause + (f" (+{len(overdue) - 1} more)" if len(overdue) > 1 else ""),
        asset=verdict.asset,
        partition=overdue[0].label,
        run_id=run_id,
        url=settings.run_url(run_id) if run_id else settings.asset_url(verdict.asset),
        action=_rerun_command(verdict, overdue),
    )


def resolved_alert(verdict: Verdict, labels: list[str], settings: AlertSettings) -> Alert:
    what = "published" if verdict.check_name == USAGE_DEADLINE_CHECK else "final"
    return Alert(
        kind="deadline_resolved",
        title=f"resolved: {verdict.asset} {', '.join(labels)} now {what}",
        cause=f"{', '.join(labels)} {what} after the deadline",
        asset=verdict.asset,
        partition=labels[0],
        url=settings.asset_url(verdict.asset),
    )


def evaluate_deadlines(
    instance: dg.DagsterInstance,
    cursor: DeadlineCursor,
    now,
    settings: AlertSettings,
    grace_days: int,
    log,
) -> list[dg.AssetCheckEvaluation]:
    """Judge both deadline checks; alert new misses (once) and their resolution; return the
    check evaluations whose result changed."""
    verdicts = [
        usage_verdict(instance, now, settings),
        invoice_verdict(instance, now, grace_days, settings),
    ]
    courier = Courier(settings, log)
    events = []
    for verdict in verdicts:
        check = verdict.check_name
        if cursor.reported.get(check) != verdict.signature:
            events.append(verdict.evaluation())
            cursor.reported[check] = verdict.signature
        overdue = {o.label for o in verdict.overdue}
        # alerted[label]: True once its miss alert went out; False: retry on the next tick.
        alerted = cursor.alerted.get(check, {})
        new = [o for o in verdict.overdue if not alerted.get(o.label)]
        if new:
            sent = courier.send(miss_alert(verdict, new, settings))
            alerted.update({o.label: sent for o in new})
        resolved = sorted(
            label
            for label, sent in alerted.items()
            if sent and label not in overdue and label in verdict.judged
        )
        if resolved and not courier.send(resolved_alert(verdict, resolved, settings)):
            overdue |= set(resolved)  # keep them: the resolution is sent on the next tick
        # Forget the rest: resolved, never alerted, or out of the look-back.
        cursor.alerted[check] = {k: v for k, v in alerted.items() if k in overdue}
    return events


@dg.sensor(
    name="partition_deadlines",
    minimum_interval_seconds=300,
    default_status=sensor_status(),
    description="Every 5 minutes: are the recent days of usage_daily published (deadline "
    "USAGE_ETL_USAGE_DEADLINE, 07:30 UTC the next day) and the recent months' invoices final "
    "(period_end + grace_days + 1 day)? Reports the two deadline checks when their result "
    "changes; one alert when a partition becomes overdue, one when it is resolved.",
)
def partition_deadlines(
    context: dg.SensorEvaluationContext, clock: ClockResource, price_book: PriceBookResource
):
    settings = AlertSettings()
    cursor = DeadlineCursor(context.cursor)
    events = evaluate_deadlines(
        context.instance,
        cursor,
        clock.now(),
        settings,
        invoice_grace_days(settings, price_book),
        context.log,
    )
    return dg.SensorResult(
        asset_events=events,
        cursor=cursor.dump(),
        skip_reason=None if events else "no change since the last tick",
    )
