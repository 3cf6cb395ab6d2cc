"""What the Dagster instance knows about past and queued runs (run and event storage only).

Sensors and schedules read this instead of ClickHouse: they must stay cheap, and the embedded
engine admits one process, which belongs to the run that is executing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import dagster as dg

from usage_etl.defs.vocabulary import (
    DAILY_USAGE_JOB,
    INVOICE_LINES_KEY,
    PARTITION_TAG,
    USAGE_DAILY_KEY,
)
from usage_etl.periods import Period

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _latest_materializations(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partitions: Iterable[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of each partition that has one (two indexed reads)."""
    storage_ids = instance.get_latest_storage_id_by_partition(
        asset, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not storage_ids:
        return {}
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, storage_ids=list(storage_ids.values())),
        limit=len(storage_ids),
    )
    return {r.partition_key: r for r in result.records if r.partition_key}


def _publishes_usage(run: dg.DagsterRun) -> bool:
    if run.job_name == DAILY_USAGE_JOB:
        return True
    return USAGE_DAILY_KEY in (run.asset_selection or set())


def day_baselines(instance: dg.DagsterInstance, days: Iterable[date]) -> dict[date, float]:
    """For each day usage_daily was ever published: the time after which a landed file may be
    unseen. That is the creation time of the run that last published the day, or of a later
    run for the day still queued or running (it will list the prefix when it starts). A run is
    created before it lists, so the baseline errs on the side of re-running.

    Days never published are absent: the schedule and backfills own those."""
    by_key = {d.isoformat(): d for d in days}
    published = _latest_materializations(instance, USAGE_DAILY_KEY, by_key)
    if not published:
        return {}
    runs = {
        r.dagster_run.run_id: r
        for r in instance.get_run_records(
            dg.RunsFilter(run_ids=list({rec.run_id for rec in published.values()}))
        )
    }
    baselines = {}
    for key, record in published.items():
        run = runs.get(record.run_id)
        baselines[key] = run.create_timestamp.timestamp() if run else record.timestamp
    in_flight = instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={PARTITION_TAG: list(baselines)})
    )
    for run in in_flight:
        key = run.dagster_run.tags.get(PARTITION_TAG)
        if key in baselines and _publishes_usage(run.dagster_run):
            baselines[key] = max(baselines[key], run.create_timestamp.timestamp())
    return {by_key[k]: v for k, v in baselines.items()}


def period_is_final(instance: dg.DagsterInstance, period: Period) -> bool:
    """True once a monthly_invoices run has published the period's lines as final (the
    status the invoice asset records in its materialization metadata)."""
    key = period.start.isoformat()
    record = _latest_materializations(instance, INVOICE_LINES_KEY, [key]).get(key)
    if record is None or record.asset_materialization is None:
        return False
    status = record.asset_materialization.metadata.get("status")
    return status is not None and status.value == "final"
