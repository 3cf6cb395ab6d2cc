"""daily_usage assets: landing files -> rollup_rows (validated, quarantined) -> usage_hourly,
usage_daily (deduplicated, published atomically per day)."""

import time
import uuid
from datetime import date

import dagster as dg

from usage_etl.defs.column_schemas import (
    CACHE_EVENTS,
    ROLLUP_ROWS,
    USAGE_DAILY,
    USAGE_HOURLY,
    column_schema,
)
from usage_etl.defs.resources import ClickHouseResource, LandingResource, NodeRegistryResource
from usage_etl.defs.usage.days import DAILY_BACKFILL_POLICY, each_day, is_range, range_failure
from usage_etl.defs.usage.errors import TRANSIENT_RETRY, retry_only_transient
from usage_etl.defs.vocabulary import (
    CACHE_EVENTS_KEY,
    LANDING_FILES_KEY,
    POOL,
    ROLLUP_ROWS_KEY,
    SOURCES_GROUP,
    USAGE_DAILY_KEY,
    USAGE_GROUP,
    USAGE_HOURLY_KEY,
    daily_partitions,
    days_of,
)
from usage_etl.landing import Landing
from usage_etl.usage import ledger, native
from usage_etl.usage.load import PrefetchedDay, Prefetcher, ingest_day
from usage_etl.usage.publish import publish_day, record_day_publication, top_accounts

landing_rollup_files = dg.AssetSpec(
    LANDING_FILES_KEY,
    group_name=SOURCES_GROUP,
    kinds={"s3"},
    description="Hourly rollup files dropped by cache nodes under USAGE_ETL_LANDING_URL "
    "(contract §1): date=/hour=/node= prefixes, Parquet or NDJSON.gz, delivered at least once.",
    owners=["team:metering"],
)

cache_events = dg.AssetSpec(
    CACHE_EVENTS_KEY,
    group_name=SOURCES_GROUP,
    kinds={"clickhouse"},
    description="Project-scoped cache analytics written by the application (contract §2); "
    "read-only for the pipeline, a lower bound for reconciliation.",
    owners=["team:app"],
    metadata=column_schema(CACHE_EVENTS),
)


def _load_id(context: dg.AssetExecutionContext) -> str:
    return _new_load_id(context.run.run_id)


def _new_load_id(run_id: str) -> str:
    """Unique per step attempt and day: a retried attempt never shares rows with a failed one."""
    return f"{run_id}.{uuid.uuid4().hex[:8]}"


@dg.asset(
    key=ROLLUP_ROWS_KEY,
    group_name=USAGE_GROUP,
    partitions_def=daily_partitions,
    deps=[landing_rollup_files],
    pool=POOL,
    kinds={"s3", "polars", "clickhouse"},
    owners=["team:metering"],
    metadata=column_schema(ROLLUP_ROWS),
    retry_policy=TRANSIENT_RETRY,
    backfill_policy=DAILY_BACKFILL_POLICY,
    tags={"usage_etl/layer": "staging"},
)
def rollup_rows(
    context: dg.AssetExecutionContext,
    clickhouse: ClickHouseResource,
    landing: LandingResource,
    node_registry: NodeRegistryResource,
) -> dg.MaterializeResult:
    """Every rollup row of the day, validated against contract §1 and staged with its source
    object; broken rows and unreadable files go to `quarantined_rows` with the rule they broke.
    Objects already decided (same ETag) are skipped, so a re-run picks up only late and
    overwritten files. A range run (backfill) does this day by day (days.py)."""
    with retry_only_transient("opening the warehouse"):
        warehouse = clickhouse.get_warehouse()
    client = landing.get_client()
    s3_access = landing.clickhouse_access(client)
    area = Landing(client, landing.bucket, landing.prefix)
    days = days_of(context)
    if not is_range(context):
        yield dg.MaterializeResult(
            metadata=_ingest(context, warehouse, area, node_registry, days[0], s3_access)
        )
        return
    done: dict[date, dict] = {}
    failures: dict[date, BaseException] = {}
    # The next day is listed and fetched while this one is processed (embedded engine only:
    # its small objects are read from local copies, usage/fetch.py).
    prefetching = s3_access is not None and warehouse.embedded and native.FETCH
    with Prefetcher(area) as prefetcher:
        for n, day in enumerate(days):
            prefetched = prefetcher.take(day)
            if prefetching and n + 1 < len(days):
                prefetcher.start(days[n + 1])
            try:
                done[day] = _ingest(context, warehouse, area, node_registry, day, s3_access,
                                    prefetched)  # fmt: skip
            except Exception as exc:  # the day is named, the other days go on (days.py)
                context.log.error(f"ingesting {day} failed: {exc}")
                failures[day] = exc
    if failures:
        for day, metadata in done.items():
            yield dg.AssetMaterialization(
                ROLLUP_ROWS_KEY, partition=day.isoformat(), metadata=metadata
            )
        raise range_failure("ingesting", len(days), failures)
    for day, metadata in done.items():
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    yield dg.MaterializeResult(metadata=_range_summary(done))


def _range_summary(done: dict[date, dict]) -> dict:
    return {
        "days": len(done),
        "first_day": min(done).isoformat(),
        "last_day": max(done).isoformat(),
    }


def _ingest(
    context: dg.AssetExecutionContext,
    warehouse,
    landing: Landing,
    node_registry: NodeRegistryResource,
    day: date,
    s3_access,
    prefetched: PrefetchedDay | None = None,
) -> dict:
    """Ingest one day; its materialization metadata."""
    began = time.perf_counter()
    registry = node_registry.load()
    with retry_only_transient(f"ingesting {day}", s3_endpoint=landing.client.meta.endpoint_url):
        report = ingest_day(
            warehouse, landing, day,
            load_id=_load_id(context), tenant_for_node=registry.tenant_for_node,
            s3_access=s3_access, prefetched=prefetched,
        )  # fmt: skip
    # One log event per kind and day, every object on its own line (a run's log events are
    # rows of the instance's event log: ~30 per-object events a demo day were ~1,000 writes
    # over a month's backfill). The same lists go into the day's materialization metadata.
    # A pathological day is cut into events of `per_event` objects, so no event grows unbounded.
    kinds = (
        ("objects_read_by_python", context.log.info, "read by Python, not ClickHouse",
         report.objects_handed_back.items()),
        ("quarantined_files", context.log.warning, "quarantined files", report.quarantined_files),
        ("ignored_objects", context.log.info, "ignored objects", report.ignored_objects),
    )  # fmt: skip
    listed = {
        kind: [(f"s3://{landing.bucket}/{key}", why) for key, why in objects]
        for kind, _, _, objects in kinds
    }
    per_event = 500
    for kind, log, title, _ in kinds:
        objects = listed[kind]
        for start in range(0, len(objects), per_event):
            chunk = objects[start : start + per_event]
            part = f" ({start + 1}-{start + len(chunk)})" if len(objects) > per_event else ""
            lines = "\n".join(f"  {url}: {why}" for url, why in chunk)
            log(f"{day}: {len(objects)} {title}{part}:\n{lines}")
    unregistered = registry.unregistered_nodes_seen()
    day_state = ledger.day_state(warehouse, day)
    return {
        "day": day.isoformat(),
        "objects_listed": report.objects_listed,
        "objects_new_loaded": report.objects_loaded,
        "objects_new_quarantined": report.objects_quarantined,
        "objects_new_ignored": report.objects_ignored,
        "objects_already_ingested": report.objects_skipped,
        "objects_read_by_clickhouse": report.objects_read_natively,
        "rows_read": report.rows_read,
        "rows_loaded": report.rows_loaded,
        "rows_quarantined": report.rows_quarantined,
        "quarantined_by_rule": dict(report.quarantined_by_rule),
        **{kind: dict(objects) for kind, objects in listed.items()},
        "unregistered_nodes": sorted(unregistered),
        **{f"day_objects_{k}": v for k, v in day_state.items()},
        "dagster/row_count": report.rows_loaded,
        # Wall seconds of this day's ingest: where a range run's time went, day by day.
        "ingest_seconds": round(time.perf_counter() - began, 3),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            USAGE_HOURLY_KEY,
            deps=[ROLLUP_ROWS_KEY],
            description="Deduplicated usage per UTC hour and dimension (for the read API).",
            kinds={"clickhouse"},
            owners=["team:metering"],
            metadata=column_schema(USAGE_HOURLY),
            tags={"usage_etl/layer": "published"},
        ),
        dg.AssetSpec(
            USAGE_DAILY_KEY,
            deps=[ROLLUP_ROWS_KEY],
            description="Contract §4: deduplicated usage per day and dimension. Exact with plain "
            "SELECT … GROUP BY; each day replaced atomically.",
            kinds={"clickhouse"},
            owners=["team:metering", "team:finance"],
            metadata=column_schema(USAGE_DAILY),
            tags={"usage_etl/layer": "published"},
        ),
    ],
    group_name=USAGE_GROUP,
    partitions_def=daily_partitions,
    pool=POOL,
    retry_policy=TRANSIENT_RETRY,
    backfill_policy=DAILY_BACKFILL_POLICY,
)
def published_usage(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource):
    """Pick the latest version of every event_id of the day and swap the day's partitions of
    usage_hourly and usage_daily in atomically. A range run publishes day by day (days.py)."""
    warehouse = clickhouse.get_warehouse()
    days = days_of(context)
    if not is_range(context):
        hourly, daily = _publish(context, warehouse, days[0])
        yield dg.MaterializeResult(asset_key=USAGE_HOURLY_KEY, metadata=hourly)
        yield dg.MaterializeResult(asset_key=USAGE_DAILY_KEY, metadata=daily)
        return
    done: dict[date, tuple[dict, dict]] = {}
    failures: dict[date, BaseException] = {}

    def report(day: date, outcome: tuple[dict, dict, str | None] | Exception) -> None:
        if isinstance(outcome, Exception):  # the day is named, the other days go on (days.py)
            context.log.error(f"publishing {day} failed: {outcome}")
            failures[day] = outcome
            return
        hourly, daily, overflow = outcome
        if overflow:
            context.log.warning(overflow)
        context.log.info(f"published {day}")
        done[day] = (hourly, daily)

    run_id = context.run.run_id
    each_day(warehouse, days, lambda own, day: _published(run_id, own, day), report)
    if failures:
        for day, (hourly, daily) in done.items():
            yield dg.AssetMaterialization(
                USAGE_HOURLY_KEY, partition=day.isoformat(), metadata=hourly
            )
            yield dg.AssetMaterialization(
                USAGE_DAILY_KEY, partition=day.isoformat(), metadata=daily
            )
        # The check steps are skipped once this step fails: check the published days here.
        from usage_etl.defs.usage.checks import range_check_evaluations

        yield from range_check_evaluations(warehouse, sorted(done))
        raise range_failure("publishing", len(days), failures)
    for day, (hourly, daily) in done.items():
        context.add_asset_metadata(
            hourly, asset_key=USAGE_HOURLY_KEY, partition_key=day.isoformat()
        )
        context.add_asset_metadata(daily, asset_key=USAGE_DAILY_KEY, partition_key=day.isoformat())
    summary = _range_summary(done)
    yield dg.MaterializeResult(asset_key=USAGE_HOURLY_KEY, metadata=summary)
    yield dg.MaterializeResult(asset_key=USAGE_DAILY_KEY, metadata=summary)


def _publish(context: dg.AssetExecutionContext, warehouse, day: date) -> tuple[dict, dict]:
    """Publish one day; the metadata of its usage_hourly and usage_daily materializations."""
    hourly, daily, overflow = _published(context.run.run_id, warehouse, day)
    if overflow:
        context.log.warning(overflow)
    return hourly, daily


def _published(run_id: str, warehouse, day: date) -> tuple[dict, dict, str | None]:
    """Publish one day: the metadata of its usage_hourly and usage_daily materializations and
    the warning about groups that overflowed, if any. Logs nothing: a range run publishes days
    on other threads and reports them in order (days.each_day)."""
    began = time.perf_counter()
    load_id = _new_load_id(run_id)
    with retry_only_transient(f"publishing {day} (nothing was published)"):
        report = publish_day(warehouse, day, load_id)
    overflow = None
    if report.overflow_groups:
        overflow = (
            f"{day}: {report.overflow_groups} usage_daily group(s) sum beyond UInt64 and were not "
            f"published; their {report.overflow_rows} rollup(s) are quarantined as "
            "group_sum_overflow (quarantined_rows names each group). Every other group is exact."
        )
    state = record_day_publication(warehouse, report, load_id)
    preview = _markdown_top_accounts(top_accounts(warehouse, day))
    shared = {"day": day.isoformat(), "rollups": report.rollups}
    hourly = {**shared, "dagster/row_count": report.rollups}
    daily = {
        **shared,
        "rows_considered": report.versions,
        "duplicates_removed": report.duplicates,
        "conflicts": report.conflicts,
        "groups_overflowed": report.overflow_groups,
        "rows_quarantined_overflow": report.overflow_rows,
        "bytes": report.bytes,
        "request_count": report.request_count,
        "objects_loaded": state["loaded"],
        "objects_quarantined": state["quarantined"],
        "objects_ignored": state["ignored"],
        "dagster/row_count": report.groups,
        "top_accounts": dg.MetadataValue.md(preview),
        "publish_seconds": round(time.perf_counter() - began, 3),
    }
    return hourly, daily, overflow


def _markdown_top_accounts(rows: list[dict]) -> str:
    lines = [
        "| account | egress bytes | ingress bytes | requests |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['account_id']} | {r['egress_bytes']:,} | {r['ingress_bytes']:,} | "
            f"{r['requests']:,} |"
            for r in rows
        ),
    ]
    return "\n".join(lines) if rows else "_no usage for this day_"
