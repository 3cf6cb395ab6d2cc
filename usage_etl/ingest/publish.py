"""Deduplicate a day's staged rollups and publish `usage_hourly` and `usage_daily` atomically.

Dedupe (contract §1): per event_id, the version with the greatest emitted_at wins; between
versions with equal emitted_at the one with the greatest content hash wins, so the choice is
the same whatever order files arrived or were processed in. Identical re-deliveries have the
same hash and count once; equal emitted_at with different contents is a *conflict*, counted
and reported.

Publish: the day is computed into per-load build tables, then swapped in with
`ALTER TABLE … REPLACE PARTITION`, which is atomic per table: readers see the old day or the
new one, never half or double. Sums are taken in UInt128 and cast back with accurateCast, so a
total that does not fit UInt64 fails the run loudly instead of wrapping.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from usage_etl import faults
from usage_etl.ingest.ledger import current_entries, current_loads_sql
from usage_etl.rollups.schema import USAGE_DIMENSIONS
from usage_etl.warehouse.build_tables import BUILD_PREFIX, NO_MERGE_SETTINGS, create_build_table
from usage_etl.warehouse.client import Warehouse, WarehouseError

DIMENSIONS = ", ".join(USAGE_DIMENSIONS)
# Staged rows whose event_id hashes are counted per pass when finding duplicated event_ids:
# bounds that GROUP BY's memory (~32 bytes per row) however large the day grows.
DEDUPE_BUCKET_ROWS = int(os.environ.get("USAGE_ETL_DEDUPE_BUCKET_ROWS", "20000000"))
# Rows aggregated per hourly pass (buckets of accounts): the hourly GROUP BY holds nearly one
# entry per row (~100 bytes each with integer ids). Each extra pass re-reads the day: at 10M
# rows, 3 passes were as fast as 2 and peaked at 1.1 instead of 1.4 GiB; 4 were slower.
GROUP_BUCKET_ROWS = int(os.environ.get("USAGE_ETL_GROUP_BUCKET_ROWS", "2600000"))


@dataclass(frozen=True)
class PublishReport:
    day: date
    rollups: int
    versions: int
    conflicts: int
    bytes: int
    request_count: int
    groups: int

    @property
    def duplicates(self) -> int:
        return self.versions - self.rollups


# Tie-breaker between versions of an event_id with equal emitted_at (contract §1): computed
# only for event_ids with several versions (a few percent of a day).
CONTENT_HASH = (
    "cityHash64(node_id, region, account_id, project_id, direction, operation, artifact_kind, "
    "network_path, window_start, window_seconds, bytes, request_count)"
)


def current_rows_sql(warehouse: Warehouse) -> str:
    """The staged rows of `{day:Date}` that count: those of each object's current load.

    Rows are matched on load_key, the 128-bit hash of their (source_key, source_etag, run_id)
    computed on insert (sql/005): the odds that a stale load's key equals a current one's are
    ~1e-34 per pair, far below any hardware error rate, at 1/40 of the cost of the tuple."""
    return f"""
        SELECT * FROM {warehouse.table("rollup_rows")}
        WHERE day = {{day:Date}}
          AND load_key IN (
              SELECT sipHash128(object_key, etag, run_id)
              FROM ({current_loads_sql(warehouse)}) AS loads (object_key, etag, run_id)
          )
    """


def latest_versions_sql(warehouse: Warehouse, duplicates: str) -> str:
    """One row per event_id whose hash is in the table `duplicates`: the winning version (the
    greatest (emitted_at, content_hash)), how many versions it was chosen from, and whether the
    versions sharing the greatest emitted_at differ in content (a conflict)."""
    return f"""
        SELECT
            event_id,
            argMax(({DIMENSIONS}, window_start, bytes, request_count),
                   (emitted_at, content_hash)) AS v,
            count() AS versions,
            argMax(content_hash, (emitted_at, content_hash))
                != argMin(content_hash, (-toUnixTimestamp64Micro(emitted_at), content_hash))
                AS conflict
        FROM (
            SELECT *, {CONTENT_HASH} AS content_hash FROM ({current_rows_sql(warehouse)})
            WHERE event_hash IN (SELECT event_hash FROM {warehouse.table(duplicates)})
        )
        GROUP BY event_id
    """


def _sum(column: str) -> str:
    return f"accurateCast(sum(toUInt128({column})), 'UInt64')"


# Runs of the same day may overlap on a ClickHouse server (no engine lock): one that built its
# tables before another recorded new objects could swap in after it, and overwrite the newer
# day with an older one. So after swapping, a run checks that the day's ledger did not change
# since it started building; if it did, it builds and swaps again. The last swap of the day is
# then always built from the complete ledger.
MAX_PUBLISH_ATTEMPTS = 5


def publish_day(warehouse: Warehouse, day: date, load_id: str) -> PublishReport:
    for _ in range(MAX_PUBLISH_ATTEMPTS):
        version = _ledger_version(warehouse, day)
        report = _publish_once(warehouse, day, load_id)
        if _ledger_version(warehouse, day) == version:
            return report
    raise WarehouseError(
        f"{day}: other runs kept recording objects while this one published; re-run the day",
        transient=True,
    )


def _ledger_version(warehouse: Warehouse, day: date) -> int:
    """Rows of the day's append-only ledger: grows with every decision any run records."""
    return warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('ingest_objects')} WHERE day = {{day:Date}}",
        {"day": day},
    )


def _publish_once(warehouse: Warehouse, day: date, load_id: str) -> PublishReport:
    suffix = re.sub(r"[^A-Za-z0-9]", "_", load_id)[:48]
    build_hourly = f"{BUILD_PREFIX}usage_hourly_{suffix}"
    build_daily = f"{BUILD_PREFIX}usage_daily_{suffix}"
    params = {"day": day}
    try:
        for build, target in ((build_hourly, "usage_hourly"), (build_daily, "usage_daily")):
            warehouse.command(f"DROP TABLE IF EXISTS {warehouse.table(build)}")
            create_build_table(warehouse, build, target)  # plain MergeTree if replicated
        _dedupe_into(warehouse, build_hourly, build_daily, day, suffix)
        report = _report(warehouse, build_hourly, build_daily, day)
        faults.fault_point("publish.before_swap")
        for build, target in ((build_hourly, "usage_hourly"), (build_daily, "usage_daily")):
            # An empty day (everything quarantined or deleted) has no partition to swap in:
            # dropping the target's partition is the atomic equivalent.
            swap = (
                f"REPLACE PARTITION {{day:Date}} FROM {warehouse.table(build)}"
                if report.groups
                else "DROP PARTITION {day:Date}"
            )
            warehouse.command(f"ALTER TABLE {warehouse.table(target)} {swap}", params)
        faults.fault_point("publish.before_record")
    finally:
        for build in (build_hourly, build_daily):
            warehouse.command(f"DROP TABLE IF EXISTS {warehouse.table(build)}")
    return report


def dedupe_buckets(warehouse: Warehouse, day: date) -> int:
    """How many event_hash buckets duplicates are searched in (staged rows, from metadata)."""
    staged = warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('rollup_rows')} WHERE day = {{day:Date}}",
        {"day": day},
    )
    return max(1, math.ceil((staged or 0) / DEDUPE_BUCKET_ROWS))


def find_duplicates(warehouse: Warehouse, day: date, duplicates: str) -> None:
    """Fill the table `duplicates` with the event_hash of every event_id of the day that has
    more than one counting version (plus, rarely, hash collisions: harmless, see below)."""
    warehouse.command(f"DROP TABLE IF EXISTS {warehouse.table(duplicates)}")
    warehouse.command(
        f"CREATE TABLE {warehouse.table(duplicates)} (event_hash UInt64) "
        "ENGINE = MergeTree ORDER BY event_hash"
    )
    buckets = dedupe_buckets(warehouse, day)
    for bucket in range(buckets):
        warehouse.command(
            f"""
            INSERT INTO {warehouse.table(duplicates)}
            SELECT event_hash FROM ({current_rows_sql(warehouse)})
            WHERE event_hash % {{buckets:UInt32}} = {{bucket:UInt32}}
            GROUP BY event_hash
            HAVING count() > 1
            """,
            {"day": day, "buckets": buckets, "bucket": bucket},
        )


def _dedupe_into(
    warehouse: Warehouse, build_hourly: str, build_daily: str, day: date, suffix: str
) -> None:
    """Latest version per event_id, aggregated per hour and per day, into the build tables.

    Most event_ids have one version. Those rows are aggregated as they are, with no per-event_id
    state at all; only event_ids whose hash occurs more than once go through the exact argMax
    by event_id, once, into a small table of winners. Equal event_ids have equal hashes, so
    every real duplicate takes the exact path; a hash collision merely sends two unique
    event_ids there too. The sum is exact either way.

    Groups are keyed by dense integer ids of the dimension values (`_dimension_ids`). The hourly
    GROUP BY holds nearly one entry per rollup, so the day is taken in buckets of accounts, one
    after the other: a bucket's hourly groups go into a narrow table, from which its hourly and
    daily rows are spelled out. account_id is a dimension of both tables, so every hourly and
    every daily group lies in exactly one bucket, and memory is bounded by the bucket, not the
    day.
    """
    duplicates = f"{BUILD_PREFIX}duplicate_ids_{suffix}"
    winners = f"{BUILD_PREFIX}winners_{suffix}"
    grouped = f"{BUILD_PREFIX}grouped_{suffix}"
    dimensions = f"{BUILD_PREFIX}dimensions_{suffix}"
    try:
        find_duplicates(warehouse, day, duplicates)
        _resolve_duplicates(warehouse, day, duplicates, winners)
        counts = _store_dimensions(warehouse, day, dimensions)
        ids, names, key = _dimension_ids(warehouse, dimensions, counts)
        buckets = max(1, math.ceil(_counting_rows(warehouse, day) / GROUP_BUCKET_ROWS))
        for bucket in range(buckets):
            params = {"day": day, "buckets": buckets, "bucket": bucket}
            _group_hourly(warehouse, params, duplicates, winners, grouped, ids, key)
            _spell_out(warehouse, params, grouped, build_hourly, build_daily, names, key)
    finally:
        for table in (duplicates, winners, grouped, dimensions):
            warehouse.command(f"DROP TABLE IF EXISTS {warehouse.table(table)}")


# usage_hourly's sorting key, in dimension ids (see _sort_key).
HOURLY_ORDER_IDS = (
    "i_account_id, hour_of_day, i_project_id, i_region, i_node_id, i_direction, i_operation, "
    "i_artifact_kind, i_network_path"
)
ID_COLUMNS = ", ".join(f"i_{name}" for name in USAGE_DIMENSIONS)


def _group_hourly(
    warehouse: Warehouse,
    params: dict,
    duplicates: str,
    winners: str,
    grouped: str,
    ids: str,
    key: HourlyKey,
) -> None:
    """Sums per hourly key (hour of day and dimension ids, packed) of one bucket's
    single-version rows and winners, into `grouped` (UInt128 sums: checked against UInt64 when
    spelled out)."""
    in_bucket = "cityHash64(account_id) % {buckets:UInt32} = {bucket:UInt32}"
    warehouse.command(f"DROP TABLE IF EXISTS {warehouse.table(grouped)}")
    warehouse.command(
        f"""
        CREATE TABLE {warehouse.table(grouped)} ENGINE = MergeTree ORDER BY sort_key
        SETTINGS {NO_MERGE_SETTINGS} AS
        SELECT {key.encode} AS sort_key,
               sum(toUInt128(bytes)) AS b, sum(toUInt128(request_count)) AS r,
               sum(rollup) AS rollups, sum(versions) AS versions, sum(conflict) AS conflicts
        FROM (
            SELECT toHour(window_start) AS hour_of_day, {ids},
                   bytes, request_count, rollup, versions, conflict
            FROM (
                SELECT window_start, {DIMENSIONS}, bytes, request_count,
                       1 AS rollup, 1 AS versions, 0 AS conflict
                FROM ({current_rows_sql(warehouse)})
                WHERE {in_bucket} AND event_hash NOT IN (
                    SELECT event_hash FROM {warehouse.table(duplicates)}
                )
                UNION ALL
                SELECT window_start, {DIMENSIONS}, bytes, request_count, 1, versions, conflict
                FROM {warehouse.table(winners)}
                WHERE {in_bucket}
            )
        )
        GROUP BY sort_key
        """,
        params,
    )


def _spell_out(
    warehouse: Warehouse,
    params: dict,
    grouped: str,
    build_hourly: str,
    build_daily: str,
    names: str,
    key: HourlyKey,
) -> None:
    """A bucket's hourly groups, and their sums per day, into the build tables with the
    dimension values in place of their ids."""
    unpacked = (
        f"SELECT sort_key, {key.decode}, b, r, rollups, versions, conflicts "
        f"FROM {warehouse.table(grouped)}"
    )
    warehouse.command(
        f"""
        INSERT INTO {warehouse.table(build_hourly)}
            (day, hour, {DIMENSIONS}, bytes, request_count, rollups, versions, conflicts)
        SELECT {{day:Date}}, toDateTime({{day:Date}}, 'UTC') + hour_of_day * 3600, {names},
               accurateCast(b, 'UInt64'), accurateCast(r, 'UInt64'), rollups, versions, conflicts
        FROM ({unpacked})
        ORDER BY sort_key
        """,
        params,
    )
    warehouse.command(
        f"""
        INSERT INTO {warehouse.table(build_daily)} (day, {DIMENSIONS}, bytes, request_count)
        SELECT {{day:Date}}, {names}, accurateCast(b, 'UInt64'), accurateCast(r, 'UInt64')
        FROM (
            SELECT {ID_COLUMNS}, sum(b) AS b, sum(r) AS r
            FROM ({unpacked})
            GROUP BY {ID_COLUMNS}
        )
        """,
        params,
    )


def _resolve_duplicates(warehouse: Warehouse, day: date, duplicates: str, winners: str) -> None:
    """The winning version of every event_id listed in `duplicates`, into `winners`."""
    n = len(USAGE_DIMENSIONS)
    winner_dims = ", ".join(f"v.{i + 1} AS {name}" for i, name in enumerate(USAGE_DIMENSIONS))
    warehouse.command(f"DROP TABLE IF EXISTS {warehouse.table(winners)}")
    warehouse.command(
        f"""
        CREATE TABLE {warehouse.table(winners)} ENGINE = MergeTree ORDER BY tuple() AS
        SELECT v.{n + 1} AS window_start, {winner_dims}, v.{n + 2} AS bytes,
               v.{n + 3} AS request_count, versions, toUInt8(conflict) AS conflict
        FROM ({latest_versions_sql(warehouse, duplicates)})
        """,
        {"day": day},
    )


def _store_dimensions(warehouse: Warehouse, day: date, dimensions: str) -> dict[str, int]:
    """Every value each dimension takes among the day's counting rows, sorted, into a one-row
    table (`values_<dimension>` arrays); returns how many values each has.

    The arrays stay in ClickHouse and reach statements as scalar subqueries: sent as query
    parameters they would be SQL text, and a day with many long distinct values (a hostile
    node can write them) would make every statement parse megabytes."""
    table = warehouse.table(dimensions)
    arrays = ", ".join(f"arraySort(groupUniqArray({d})) AS values_{d}" for d in USAGE_DIMENSIONS)
    warehouse.command(f"DROP TABLE IF EXISTS {table}")
    warehouse.command(
        f"CREATE TABLE {table} ENGINE = MergeTree ORDER BY tuple() AS "
        f"SELECT {arrays} FROM ({current_rows_sql(warehouse)})",
        {"day": day},
    )
    counts = warehouse.query_rows(
        f"SELECT {', '.join(f'length(values_{d})' for d in USAGE_DIMENSIONS)} FROM {table}"
    )[0]
    return dict(zip(USAGE_DIMENSIONS, counts, strict=True))


def _dimension_ids(
    warehouse: Warehouse, dimensions: str, counts: dict[str, int]
) -> tuple[str, str, HourlyKey]:
    """SQL that maps each dimension to a dense integer id and back, and the hourly key.

    Grouping by (hour, eight small integers) packed into one integer lets ClickHouse hash one
    fixed-size value instead of serializing eight strings per row. The mapping is a bijection
    (each value listed once), so no two groups merge."""
    ids, names = [], []
    for name in USAGE_DIMENSIONS:
        width = _id_width(counts[name])
        values = f"(SELECT values_{name} FROM {warehouse.table(dimensions)})"
        dense = f"arrayMap(i -> toUInt{width}(i), arrayEnumerate({values}))"
        ids.append(f"transform({name}, {values}, {dense}, toUInt{width}(0)) AS i_{name}")
        names.append(f"{values}[i_{name}] AS {name}")
    return ", ".join(ids), ", ".join(names), _hourly_key(counts)


def _id_width(count: int) -> int:
    return 8 if count < 2**8 else 16 if count < 2**16 else 32


@dataclass(frozen=True)
class HourlyKey:
    """usage_hourly's sorting key in dimension ids, as SQL: `encode` builds it from
    `hour_of_day` and the `i_*` ids, `decode` gives them back from a `sort_key` column."""

    encode: str
    decode: str


def _hourly_key(counts: dict[str, int]) -> HourlyKey:
    """usage_hourly's sorting key as one integer of the ids' bits (most significant first).

    Ids follow the sorted order of their values, so rows read in this key's order arrive in
    usage_hourly's own order: its insert has nothing left to sort, and ClickHouse sorts one
    integer column (radix) instead of nine columns. Grouping by the one integer is also the
    cheapest hash key (a UInt64 for any ordinary fleet: 8 bytes a group instead of 16)."""
    columns = HOURLY_ORDER_IDS.split(", ")
    bits = {name: max(1, count.bit_length()) for name, count in counts.items()}
    bits["hour_of_day"] = 5
    total = sum(bits.values())
    if total > 128:  # not with any real fleet: a tuple of the ids instead
        decode = [f"sort_key.{i} AS {column}" for i, column in enumerate(columns, start=1)]
        return HourlyKey(f"({HOURLY_ORDER_IDS})", ", ".join(decode))
    kind = "UInt64" if total <= 64 else "UInt128"
    encode, decode = [], []
    for column in columns:
        name = column.removeprefix("i_")
        total -= bits[name]
        width = 8 if name == "hour_of_day" else _id_width(counts[name])
        encode.append(f"bitShiftLeft(to{kind}({column}), {total})")
        field = f"bitAnd(bitShiftRight(sort_key, {total}), {2 ** bits[name] - 1})"
        decode.append(f"toUInt{width}({field}) AS {column}")
    return HourlyKey(" + ".join(encode), ", ".join(decode))


def _counting_rows(warehouse: Warehouse, day: date) -> int:
    """Rows the current ledger says count for the day (no scan of the staged rows)."""
    entries = current_entries(warehouse, day).values()
    return sum(e.rows_loaded for e in entries if e.status == "loaded")


def _report(warehouse: Warehouse, build_hourly: str, build_daily: str, day: date) -> PublishReport:
    rollups, versions, conflicts, total_bytes, requests = warehouse.query_rows(
        f"""
        SELECT sum(rollups), sum(versions), sum(conflicts), {_sum("bytes")},
               {_sum("request_count")}
        FROM {warehouse.table(build_hourly)}
        """
    )[0]
    groups = warehouse.query_one(f"SELECT count() FROM {warehouse.table(build_daily)}")
    return PublishReport(day, rollups, versions, conflicts, total_bytes, requests, groups)


def record_publication(
    warehouse: Warehouse,
    report: PublishReport,
    load_id: str,
    objects: dict[str, int],
) -> None:
    warehouse.insert_rows(
        "usage_day_publications",
        [[
            report.day, load_id, datetime.now(UTC), objects["loaded"], objects["quarantined"],
            objects["ignored"], report.versions, report.rollups, report.duplicates,
            report.conflicts, report.bytes, report.request_count,
        ]],
        [
            "day", "run_id", "published_at", "objects_loaded", "objects_quarantined",
            "objects_ignored", "rows_loaded", "rollups", "duplicates", "conflicts", "bytes",
            "request_count",
        ],
    )  # fmt: skip


def top_accounts(warehouse: Warehouse, day: date, limit: int = 10) -> list[dict]:
    return warehouse.query_dicts(
        f"""
        SELECT account_id,
               sumIf(bytes, direction = 'egress') AS egress_bytes,
               sumIf(bytes, direction = 'ingress') AS ingress_bytes,
               sum(request_count) AS requests
        FROM {warehouse.table("usage_daily")}
        WHERE day = {{day:Date}}
        GROUP BY account_id
        ORDER BY egress_bytes DESC, account_id
        LIMIT {{limit:UInt32}}
        """,
        {"day": day, "limit": limit},
    )
