"""Which partitions are past their deadline? Judged from the Dagster instance only
(materializations, their metadata and runs), never from ClickHouse: the sensor that asks runs
in the daemon, and the embedded engine admits one process, the run's.

- usage_daily for a day: on time once any run has materialized the partition.
- invoice_line_items for a month: on time once its latest materialization records
  `status: final` (the metadata monthly_invoices writes, see defs/invoicing/assets.py).

A verdict covers the latest due partition and a few before it (the look-back), so a day that
is still missing stays failing after the next day is published on time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from usage_etl.alerting.deadlines import (
    invoice_deadline_of,
    latest_due_day,
    latest_due_period,
    overdue_text,
    usage_deadline_of,
)
from usage_etl.defs.vocabulary import (
    DAILY_USAGE_JOB,
    FIRST_DAY,
    INVOICE_DEADLINE_CHECK,
    INVOICE_LINES_KEY,
    MONTHLY_INVOICES_JOB,
    PARTITION_TAG,
    USAGE_DAILY_KEY,
    USAGE_DEADLINE_CHECK,
)
from usage_etl.periods import Period
from usage_etl.settings import AlertSettings

FIRST = date.fromisoformat(FIRST_DAY)


@dataclass(frozen=True)
class Overdue:
    """One partition past its deadline."""

    key: str  # the Dagster partition key (`2026-10-05`, `2026-10-01`)
    label: str  # what an operator calls it (`2026-10-05`, `2026-10`)
    deadline: datetime
    cause: str
    last_run_id: str | None


@dataclass(frozen=True)
class Verdict:
    asset: str  # the asset's name, as alerts show it
    check_name: str
    latest: str | None  # label of the latest due partition (None: nothing due yet)
    judged: tuple[str, ...]  # labels of every partition judged (the look-back)
    overdue: tuple[Overdue, ...]

    @property
    def passed(self) -> bool:
        return not self.overdue

    @property
    def signature(self) -> str:
        """Changes when the check's result would read differently."""
        return f"{self.latest}|{','.join(o.label for o in self.overdue)}"

    @property
    def description(self) -> str:
        if not self.overdue:
            if self.latest is None:
                return "nothing due yet"
            return f"on time: every partition due up to {self.latest} (look-back) is in"
        return " | ".join(o.cause for o in self.overdue)

    def metadata(self) -> dict:
        return {
            "latest_due": self.latest or "-",
            "overdue": [o.label for o in self.overdue],
            "judged": list(self.judged),
        }

    def check_result(self) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=self.description,
            metadata=self.metadata(),
        )

    def evaluation(self) -> dg.AssetCheckEvaluation:
        """The same result, reported by a sensor (no run). Unpartitioned on purpose: the
        instance stores one run-less evaluation per (check, partition) only."""
        return dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(self.asset),
            check_name=self.check_name,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=self.description,
            metadata=self.metadata(),
        )


def latest_materialization(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str):
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]),
        limit=1,
    )
    return result.records[0] if result.records else None


def _latest_run(instance: dg.DagsterInstance, job: str, partition: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(job_name=job, tags={PARTITION_TAG: partition}), limit=1)
    return runs[0] if runs else None


def _last_run_text(run: dg.DagsterRun | None, job: str) -> str:
    if run is None:
        return f"no {job} run for it yet"
    return f"latest {job} run {run.run_id[:8]} is {run.status.value}"


def at_text(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def usage_verdict(instance: dg.DagsterInstance, now: datetime, settings: AlertSettings) -> Verdict:
    latest = latest_due_day(now, settings.usage_deadline_time)
    days = [latest - timedelta(days=i) for i in range(settings.deadline_lookback_days)]
    days = [d for d in days if d >= FIRST]
    keys = {d.isoformat() for d in days}
    published = instance.get_latest_storage_id_by_partition(
        USAGE_DAILY_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, keys
    ) if keys else {}  # fmt: skip
    overdue = []
    for day in sorted(days, reverse=True):
        key = day.isoformat()
        if key in published:
            continue
        deadline = usage_deadline_of(day, settings.usage_deadline_time)
        run = _latest_run(instance, DAILY_USAGE_JOB, key)
        cause = (
            f"usage_daily {key} not published by {deadline:%Y-%m-%d %H:%M} UTC "
            f"({overdue_text(deadline, now)} overdue): {_last_run_text(run, DAILY_USAGE_JOB)}"
        )
        overdue.append(Overdue(key, key, deadline, cause, run.run_id if run else None))
    return Verdict(
        USAGE_DAILY_KEY.to_user_string(),
        USAGE_DEADLINE_CHECK,
        latest.isoformat() if days else None,
        tuple(sorted(keys)),
        tuple(overdue),
    )


def invoice_status(instance: dg.DagsterInstance, period: Period) -> tuple[str | None, float | None]:
    """The `status` metadata of the period's latest invoice_line_items materialization."""
    record = latest_materialization(instance, INVOICE_LINES_KEY, period.start.isoformat())
    if record is None or record.asset_materialization is None:
        return None, None
    status = record.asset_materialization.metadata.get("status")
    return (status.value if status is not None else None), record.timestamp


def invoice_verdict(
    instance: dg.DagsterInstance, now: datetime, grace_days: int, settings: AlertSettings
) -> Verdict:
    extra = settings.invoice_deadline_extra_days
    latest = latest_due_period(now, grace_days, extra)
    periods = [latest]
    while len(periods) < settings.deadline_lookback_months:
        periods.append(periods[-1].previous())
    periods = [p for p in periods if p.start >= FIRST]
    overdue = []
    for period in periods:
        status, _ = invoice_status(instance, period)
        if status == "final":
            continue
        key = period.start.isoformat()
        deadline = invoice_deadline_of(period, grace_days, extra)
        run = _latest_run(instance, MONTHLY_INVOICES_JOB, key)
        state = f"still {status}" if status else "never computed"
        cause = (
            f"invoices of {period} not final by {deadline:%Y-%m-%d %H:%M} UTC (period_end + "
            f"{grace_days} grace days + {extra}; {overdue_text(deadline, now)} overdue), "
            f"{state}: {_last_run_text(run, MONTHLY_INVOICES_JOB)}"
        )
        overdue.append(Overdue(key, period.label, deadline, cause, run.run_id if run else None))
    return Verdict(
        INVOICE_LINES_KEY.to_user_string(),
        INVOICE_DEADLINE_CHECK,
        latest.label if periods else None,
        tuple(sorted(p.label for p in periods)),
        tuple(overdue),
    )
