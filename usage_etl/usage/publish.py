"""Deduplicate a day's staged rollups and publish `usage_hourly` and `usage_daily` atomically.

Dedupe (contract §1, the rule in `dedupe.py`): per event_id, the version with the greatest
emitted_at wins among every version ever delivered (the counting rows of
`ledger.counting_rows_sql`: overwriting or deleting an object retracts nothing); between
versions with equal emitted_at the one with the greatest content hash wins, so the choice is the
same whatever order files arrived or were processed in. Identical re-deliveries have the same
hash and count once; equal emitted_at with different contents is a *conflict*, counted and
reported.

Publish: the day is computed into per-load build tables, then swapped in with
`ALTER TABLE … REPLACE PARTITION`, which is atomic per table: readers see the old day or the
new one, never half or double.

Overflow: sums are taken in UInt128. A usage_daily group (day and dimensions) whose exact sum of
bytes or request_count does not fit UInt64 is not published, in neither table: its winning rows
are quarantined under `group_sum_overflow` (naming the group) and every other group of the day
publishes exactly. Summary figures (the day's totals) stay in UInt128 / Python int and never
fail the day.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from usage_etl import crash_points
from usage_etl.rollups.schema import USAGE_DIMENSIONS
from usage_etl.settings import tuning
from usage_etl.usage import ledger
from usage_etl.usage.dedupe import DIMENSIONS, VERSION_ORDER, latest_versions_sql
from usage_etl.usage.ledger import counting_loads_sql, counting_rows_sql
from usage_etl.warehouse.build_tables import (
    BUILD_PREFIX,
    NO_MERGE_SETTINGS,
    create_build_tables,
    drop_build_tables,
)
from usage_etl.warehouse.client import Warehouse, WarehouseError

# Staged rows whose event_id hashes are counted per pass when finding duplicated event_ids:
# bounds that GROUP BY's memory (~32 bytes per row) however large the day grows.
DEDUPE_BUCKET_ROWS = tuning().dedupe_bucket_rows  # USAGE_ETL_DEDUPE_BUCKET_ROWS
# Rows aggregated per hourly pass (buckets of accounts): the hourly GROUP BY holds nearly one
# entry per row (~100 bytes each with integer ids). The day is read once into a table
# partitioned by bucket (`_store_keyed_rows`), so an extra pass costs its own statements only.
GROUP_BUCKET_ROWS = tuning().group_bucket_rows  # USAGE_ETL_GROUP_BUCKET_ROWS
# A day with at most this many counting rows keeps its duplicate hashes and hourly groups in
# Memory tables (at most ~18 MB here): no part to sort, compress and write for tables read a
# few times and dropped. On the small days of a backfill those parts cost ~15% of the publish.
SMALL_DAY_ROWS = 250_000


@dataclass(frozen=True)
class PublishReport:
    day: date
    rollups: int
    versions: int
    conflicts: int
    bytes: int
    request_count: int
    groups: int
    publish_id: str = ""  # run_id of what this publication quarantined (group_sum_overflow)
    overflow_groups: int = 0  # usage_daily groups not published: their sum exceeds UInt64
    overflow_rows: int = 0  # their winning rows, quarantined

    @property
    def duplicates(self) -> int:
        return self.versions - self.rollups


# The quarantine rule of a group whose exact sum does not fit usage_daily's UInt64 columns.
GROUP_SUM_OVERFLOW = "group_sum_overflow"
UINT64_MAX = 2**64 - 1


# Runs of the same day may overlap on a ClickHouse server (no engine lock): one that built its
# tables before another recorded new objects could swap in after it, and overwrite the newer
# day with an older one. So after swapping, a run checks that the day's ledger did not change
# since it started building; if it did, it builds and swaps again. The last swap of the day is
# then always built from the complete ledger.
MAX_PUBLISH_ATTEMPTS = 5


def publish_day(warehouse: Warehouse, day: date, load_id: str) -> PublishReport:
    for attempt in range(1, MAX_PUBLISH_ATTEMPTS + 1):
        version = ledger.version(warehouse, day)
        report = _publish_once(warehouse, day, load_id, f"{load_id}.publish.{attempt}")
        if ledger.version(warehouse, day) == version:
            return report
    raise WarehouseError(
        f"{day}: other runs kept recording objects while this one published; re-run the day",
        transient=True,
    )


def _publish_once(warehouse: Warehouse, day: date, load_id: str, publish_id: str) -> PublishReport:
    staged = staged_rows(warehouse, day)
    if not staged:
        # Nothing staged (an empty day, or every object quarantined or deleted): the
        # publication is empty, so no build or work table (~0.25 s of an empty day's run).
        report = PublishReport(day, 0, 0, 0, 0, 0, 0, publish_id)
        crash_points.fault_point("publish.before_swap")
        _swap_in(warehouse, day, {})
        crash_points.fault_point("publish.before_record")
        return report
    suffix = re.sub(r"[^A-Za-z0-9]", "_", load_id)[:48]
    build_hourly = f"{BUILD_PREFIX}usage_hourly_{suffix}"
    build_daily = f"{BUILD_PREFIX}usage_daily_{suffix}"
    work = _WorkTables(suffix)
    try:
        create_build_tables(
            warehouse, ((build_hourly, "usage_hourly"), (build_daily, "usage_daily"))
        )
        overflow = _dedupe_into(warehouse, build_hourly, build_daily, day, work, publish_id, staged)
        report = _report(warehouse, build_hourly, build_daily, day, publish_id, overflow)
        crash_points.fault_point("publish.before_swap")
        builds = {"usage_hourly": build_hourly, "usage_daily": build_daily}
        _swap_in(warehouse, day, builds if report.groups else {})
        crash_points.fault_point("publish.before_record")
    finally:
        # The build tables and the work tables, in one statement.
        drop_build_tables(warehouse, build_hourly, build_daily, *work.names)
    return report


def _swap_in(warehouse: Warehouse, day: date, builds: dict[str, str]) -> None:
    """Replace the day's partition of usage_hourly and usage_daily with their build tables'
    (`builds`: target -> build table). No builds: a day without groups has no partition to
    swap in, and dropping the targets' partition is the atomic equivalent."""
    for target in ("usage_hourly", "usage_daily"):
        swap = (
            f"REPLACE PARTITION {{day:Date}} FROM {warehouse.table(builds[target])}"
            if builds
            else "DROP PARTITION {day:Date}"
        )
        warehouse.command(f"ALTER TABLE {warehouse.table(target)} {swap}", {"day": day})


@dataclass(frozen=True)
class _WorkTables:
    """The work tables of one publish (named after its load), dropped with its build tables."""

    suffix: str

    @property
    def duplicates(self) -> str:
        return f"{BUILD_PREFIX}duplicate_ids_{self.suffix}"

    @property
    def keyed(self) -> str:
        return f"{BUILD_PREFIX}keyed_{self.suffix}"

    @property
    def grouped(self) -> str:
        return f"{BUILD_PREFIX}grouped_{self.suffix}"

    @property
    def dimensions(self) -> str:
        return f"{BUILD_PREFIX}dimensions_{self.suffix}"

    @property
    def overflow(self) -> str:
        return f"{BUILD_PREFIX}overflow_{self.suffix}"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.duplicates, self.keyed, self.grouped, self.dimensions, self.overflow)


def staged_rows(warehouse: Warehouse, day: date) -> int:
    """Rows staged for the day by any load (a count from metadata: no scan)."""
    staged = warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('rollup_rows')} WHERE day = {{day:Date}}",
        {"day": day},
    )
    return int(staged or 0)


def large_days(warehouse: Warehouse, days: list[date]) -> set[date]:
    """The days with more than SMALL_DAY_ROWS staged rows (one count for all the days)."""
    rows = warehouse.query_rows(
        f"SELECT day FROM {warehouse.table('rollup_rows')} WHERE day IN {{days:Array(Date)}} "
        "GROUP BY day HAVING count() > {small:UInt64}",
        {"days": days, "small": SMALL_DAY_ROWS},
    )
    return {row[0] for row in rows}


def dedupe_buckets(warehouse: Warehouse, day: date) -> int:
    """How many event_hash buckets duplicates are searched in (staged rows, from metadata)."""
    return _buckets(staged_rows(warehouse, day), DEDUPE_BUCKET_ROWS)


def _buckets(rows: int | None, per_bucket: int) -> int:
    return max(1, math.ceil((rows or 0) / per_bucket))


def find_duplicates(
    warehouse: Warehouse,
    day: date,
    duplicates: str,
    buckets: int | None = None,
    in_memory: bool = False,
) -> None:
    """Fill the table `duplicates` with the event_hash of every event_id of the day that has
    more than one counting version (plus, rarely, hash collisions: harmless, see below), in
    `buckets` passes of event_hash (`dedupe_buckets` unless given). The first pass creates the
    table (a Memory table `in_memory`, for a small day): a day of one bucket costs one
    statement."""
    engine = "Memory" if in_memory else "MergeTree ORDER BY event_hash"
    buckets = buckets or dedupe_buckets(warehouse, day)
    for bucket in range(buckets):
        select = f"""
            SELECT event_hash FROM ({counting_rows_sql(warehouse)})
            WHERE event_hash % {{buckets:UInt32}} = {{bucket:UInt32}}
            GROUP BY event_hash
            HAVING count() > 1
        """
        into = (
            f"CREATE OR REPLACE TABLE {warehouse.table(duplicates)} ENGINE = {engine} AS"
            if bucket == 0
            else f"INSERT INTO {warehouse.table(duplicates)}"
        )
        warehouse.command(f"{into} {select}", {"day": day, "buckets": buckets, "bucket": bucket})


def _dedupe_into(
    warehouse: Warehouse,
    build_hourly: str,
    build_daily: str,
    day: date,
    work: _WorkTables,
    publish_id: str,
    staged: int,
) -> tuple[int, int]:
    """Latest version per event_id, aggregated per hour and per day, into the build tables.

    Most event_ids have one version. Those rows are aggregated as they are, with no per-event_id
    state at all; only event_ids whose hash occurs more than once go through the exact argMax
    by event_id (`latest_versions_sql`), which takes only the winner's packed hourly key and
    values. Equal event_ids have equal hashes, so every real duplicate takes the exact path; a
    hash collision merely sends two unique event_ids there too. The sum is exact either way.

    Groups are keyed by dense integer ids of the dimension values (`_dimension_ids`). The hourly
    GROUP BY holds nearly one entry per rollup, so a large day is taken in buckets of accounts,
    one after the other. The day is read once: every rollup's bucket, hourly key and values go
    into a narrow table partitioned by bucket (`_store_keyed_rows`), and each bucket's GROUP
    BY reads its own partition into a table of hourly groups, from which its hourly and daily
    rows are spelled out. account_id is a dimension of both tables, so every hourly and every
    daily group lies in exactly one bucket, and memory is bounded by the bucket, not the day.
    A day of one bucket skips the narrow table.

    `staged`: the day's staged rows (`staged_rows`), which size the duplicate search. The work
    tables are dropped by the caller, with the build tables.
    Returns (groups, rows) quarantined because their sum does not fit UInt64 (`_spell_out`).
    """
    counts, counting = _store_dimensions(warehouse, day, work.dimensions)
    in_memory = counting <= SMALL_DAY_ROWS
    dedupe_passes = _buckets(staged, DEDUPE_BUCKET_ROWS)
    find_duplicates(warehouse, day, work.duplicates, dedupe_passes, in_memory)
    ids, names, key = _dimension_ids(warehouse, work.dimensions, counts)
    buckets = _buckets(counting, GROUP_BUCKET_ROWS)
    single, winners = _keyed_rows_sql(warehouse, work.duplicates, ids, key)
    rows = f"{single} UNION ALL {winners}"
    if buckets > 1:
        # One read of the day: every row's bucket and hourly key into a narrow table,
        # one partition per bucket; each bucket's GROUP BY then reads its own partition.
        _store_keyed_rows(warehouse, day, (single, winners), work.keyed, buckets)
        rows = f"SELECT * FROM {warehouse.table(work.keyed)} WHERE bucket = {{bucket:UInt32}}"
    overflowed = False
    for bucket in range(buckets):
        params = {"day": day, "bucket": bucket}
        _group_hourly(warehouse, params, rows, work.grouped, in_memory)
        overflowed |= _spell_out(
            warehouse, params, work.grouped, build_hourly, build_daily, names, key,
            work.overflow, first_overflow=not overflowed,
        )  # fmt: skip
    if not overflowed:
        return 0, 0
    return _quarantine_overflow(warehouse, day, work.overflow, publish_id)


# The work tables fed by the day's keyed rows are created with these columns, then filled by
# INSERT: `CREATE … AS SELECT` analyzes its SELECT once more for the table's structure, and
# these SELECTs map the dimensions through scalar subqueries of their values (a small day's
# grouping, with 32 of them: ~170 ms as CREATE … AS SELECT, ~110 as CREATE then INSERT).
GROUPED_COLUMNS = (
    "sort_key UInt64, b UInt128, r UInt128, rollups UInt64, versions UInt64, conflicts UInt64"
)
KEYED_COLUMNS = (
    "bucket UInt32, sort_key UInt64, bytes UInt64, request_count UInt64, versions UInt64, "
    "conflict UInt8"
)

# usage_hourly's sorting key, in dimension ids (see _sort_key).
HOURLY_ORDER_IDS = (
    "i_account_id, hour_of_day, i_project_id, i_region, i_node_id, i_direction, i_operation, "
    "i_artifact_kind, i_network_path"
)
ID_COLUMNS = ", ".join(f"i_{name}" for name in USAGE_DIMENSIONS)


def _keyed_rows_sql(
    warehouse: Warehouse, duplicates: str, ids: str, key: HourlyKey
) -> tuple[str, str]:
    """The day's single-version rows, and the winners of the others (`latest_versions_sql`):
    two queries of the same columns, one row per rollup: its hourly key (hour of day and
    dimension ids, packed), the account's id (`i_account_id`), its values, how many versions
    it was chosen from and whether they conflicted. A winner's dimensions are never spelled
    out: only its key is taken."""
    keyed = f"toHour(window_start) AS hour_of_day, {ids}, {key.encode} AS sort_key"
    values = ("sort_key", "i_account_id", "bytes", "request_count")
    single = f"""
        SELECT sort_key, i_account_id, bytes, request_count,
               toUInt64(1) AS versions, toUInt8(0) AS conflict
        FROM (
            SELECT {keyed}, bytes, request_count
            FROM ({counting_rows_sql(warehouse)})
            WHERE event_hash NOT IN (SELECT event_hash FROM {warehouse.table(duplicates)})
        )
    """
    winners = f"""
        SELECT w_sort_key AS sort_key, w_i_account_id AS i_account_id, w_bytes AS bytes,
               w_request_count AS request_count, versions, toUInt8(conflict) AS conflict
        FROM ({latest_versions_sql(warehouse, duplicates, values, keyed)})
    """
    return single, winners


def _store_keyed_rows(
    warehouse: Warehouse,
    day: date,
    rows: tuple[str, str],
    keyed: str,
    buckets: int,
) -> None:
    """`rows` (`_keyed_rows_sql`) into the table `keyed`, partitioned by bucket: a bucket is
    a hash of the account's id, so every hourly and every daily group lies in exactly one
    bucket (ranges of ids made one bucket of a 10M-row day twice the others: sorted account
    names are not spread evenly).
    Unsorted and never merged: each partition is read once, by its bucket's GROUP BY. The
    single-version rows and the winners are two statements: the winners' per-event_id states
    and the single rows' insert then do not hold memory at the same time. The table is
    created with KEYED_COLUMNS, then filled."""
    bucket = "intHash32(i_account_id) % {buckets:UInt32}"
    params = {"day": day, "buckets": buckets}
    columns = "bucket, sort_key, bytes, request_count, versions, conflict"
    warehouse.command(
        f"""
        CREATE OR REPLACE TABLE {warehouse.table(keyed)} ({KEYED_COLUMNS}) ENGINE = MergeTree
        PARTITION BY bucket ORDER BY tuple() SETTINGS {NO_MERGE_SETTINGS}
        """
    )
    for part in rows:
        warehouse.command(
            f"""
            INSERT INTO {warehouse.table(keyed)} ({columns})
            SELECT {bucket}, sort_key, bytes, request_count, versions, conflict FROM ({part})
            """,
            params,
            max_partitions_per_insert_block=0,
        )


def _group_hourly(
    warehouse: Warehouse, params: dict, rows: str, grouped: str, in_memory: bool = False
) -> None:
    """Sums per hourly key of one bucket's rows (`rows`: `_keyed_rows_sql`, or the keyed
    table's partition), into `grouped` (UInt128 sums: checked against UInt64 when spelled
    out): a Memory table on a small day (`SMALL_DAY_ROWS`), else sorted by the key on disk.
    The table is created with GROUPED_COLUMNS, then filled."""
    engine = "Memory" if in_memory else f"MergeTree ORDER BY sort_key SETTINGS {NO_MERGE_SETTINGS}"
    table = warehouse.table(grouped)
    warehouse.command(f"CREATE OR REPLACE TABLE {table} ({GROUPED_COLUMNS}) ENGINE = {engine}")
    warehouse.command(
        f"""
        INSERT INTO {table}
        SELECT sort_key,
               sum(toUInt128(bytes)) AS b, sum(toUInt128(request_count)) AS r,
               count() AS rollups, sum(versions) AS versions, sum(conflict) AS conflicts
        FROM ({rows})
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
    overflow: str,
    first_overflow: bool = True,
) -> bool:
    """A bucket's hourly groups, and their sums per day, into the build tables with the
    dimension values in place of their ids.

    A daily group whose sum exceeds UInt64 goes to the table `overflow` (its dimension values
    and sums) instead, with none of its hourly groups (an hourly sum is at most its day's, so
    every other hourly group fits). Returns whether the bucket had such a group. A bucket whose
    hourly sums add up within UInt64 cannot have one: the common case costs one small query.
    The first bucket that has one (`first_overflow`) replaces any `overflow` table a killed
    attempt of the same load left behind."""
    unpacked = (
        f"SELECT sort_key, {key.decode}, b, r, rollups, versions, conflicts "
        f"FROM {warehouse.table(grouped)}"
    )
    params = {**params, "max": UINT64_MAX}
    fits = warehouse.query_one(
        f"SELECT sum(b) <= {{max:UInt64}} AND sum(r) <= {{max:UInt64}} "
        f"FROM {warehouse.table(grouped)}",
        params,
    )
    published = ""
    if not fits:
        create = "CREATE OR REPLACE TABLE" if first_overflow else "CREATE TABLE IF NOT EXISTS"
        warehouse.command(
            f"""
            {create} {warehouse.table(overflow)} ENGINE = MergeTree
            ORDER BY tuple() AS
            SELECT {DIMENSIONS}, toUInt128(0) AS b, toUInt128(0) AS r
            FROM {warehouse.table(build_daily)} WHERE 0
            """
        )
        warehouse.command(
            f"""
            INSERT INTO {warehouse.table(overflow)} ({DIMENSIONS}, b, r)
            SELECT {names}, b_day, r_day FROM (
                SELECT {ID_COLUMNS}, sum(b) AS b_day, sum(r) AS r_day
                FROM ({unpacked}) GROUP BY {ID_COLUMNS}
                HAVING b_day > {{max:UInt64}} OR r_day > {{max:UInt64}}
            )
            """,
            params,
        )
        published = f"""WHERE ({ID_COLUMNS}) NOT IN (
            SELECT {ID_COLUMNS} FROM ({unpacked}) GROUP BY {ID_COLUMNS}
            HAVING sum(b) > {{max:UInt64}} OR sum(r) > {{max:UInt64}}
        )"""
    warehouse.command(
        f"""
        INSERT INTO {warehouse.table(build_hourly)}
            (day, hour, {DIMENSIONS}, bytes, request_count, rollups, versions, conflicts)
        SELECT {{day:Date}}, toDateTime({{day:Date}}, 'UTC') + hour_of_day * 3600, {names},
               accurateCast(b, 'UInt64'), accurateCast(r, 'UInt64'), rollups, versions, conflicts
        FROM ({unpacked})
        {published}
        ORDER BY sort_key
        """,
        params,
    )
    # Daily groups by the packed key with its hour cleared: one integer to hash per hourly
    # group, the ids decoded once per daily group, and rows sorted by that integer arrive in
    # usage_daily's order (account, day, then as the key), so its insert sorts no strings.
    fitting = "" if fits else "HAVING b <= {max:UInt64} AND r <= {max:UInt64}"
    warehouse.command(
        f"""
        INSERT INTO {warehouse.table(build_daily)} (day, {DIMENSIONS}, bytes, request_count)
        SELECT {{day:Date}}, {names}, accurateCast(b, 'UInt64'), accurateCast(r, 'UInt64')
        FROM (
            SELECT sort_key, {key.decode}, b, r FROM (
                SELECT daily_key AS sort_key, b, r FROM (
                    SELECT {key.daily} AS daily_key, sum(b) AS b, sum(r) AS r
                    FROM {warehouse.table(grouped)}
                    GROUP BY daily_key
                    {fitting}
                )
            )
        )
        ORDER BY sort_key
        """,
        params,
    )
    return not fits


def overflow_winners_sql(warehouse: Warehouse, groups: str) -> str:
    """The winning version of every event_id whose winner falls in one of the groups listed in
    the table `groups` (dimension columns): one row each, with its source row. Identical copies
    of a winner are told apart by their source, so the chosen copy does not depend on order."""
    n = len(USAGE_DIMENSIONS)
    dims = ", ".join(f"v.{i + 4} AS {name}" for i, name in enumerate(USAGE_DIMENSIONS))
    in_groups = f"({DIMENSIONS}) IN (SELECT {DIMENSIONS} FROM {warehouse.table(groups)})"
    return f"""
        SELECT * FROM (
            SELECT event_id, v.1 AS source_key, v.2 AS source_etag, v.3 AS source_row, {dims},
                   v.{n + 4} AS bytes, v.{n + 5} AS request_count
            FROM (
                SELECT event_id,
                       argMax((source_key, source_etag, source_row, {DIMENSIONS}, bytes,
                               request_count),
                              ({VERSION_ORDER}, source_key, source_etag, source_row)) AS v
                FROM ({counting_rows_sql(warehouse)})
                WHERE event_id IN (
                    SELECT event_id FROM ({counting_rows_sql(warehouse)}) WHERE {in_groups}
                )
                GROUP BY event_id
            )
        )
        WHERE {in_groups}
    """


def _group_label_sql() -> str:
    """`account_id=…, project_id=…, …` of a row's dimensions, as a SQL expression."""
    parts = []
    for i, name in enumerate(USAGE_DIMENSIONS):
        parts += [f"'{', ' if i else ''}{name}='", f"toString({name})"]
    return f"concat({', '.join(parts)})"


def _quarantine_overflow(
    warehouse: Warehouse, day: date, overflow: str, publish_id: str
) -> tuple[int, int]:
    """Quarantine the winning rows of the groups in `overflow` (rule group_sum_overflow, one
    row per rollup, naming the group and its sums) under this publication's own run_id. The
    field named is the measure that overflowed (bytes when both did)."""
    groups = warehouse.query_one(f"SELECT count() FROM {warehouse.table(overflow)}")
    params = {"day": day, "rule": GROUP_SUM_OVERFLOW, "max": UINT64_MAX, "publish_id": publish_id}
    warehouse.command(
        f"""
        INSERT INTO {warehouse.table("quarantined_rows")}
            (day, source_key, source_etag, scope, source_row, rule, field, value, detail, run_id,
             quarantined_at)
        SELECT {{day:Date}}, w.source_key, w.source_etag, 'row', w.source_row,
               {{rule:String}}, if(g.b > {{max:UInt64}}, 'bytes', 'request_count'),
               toString(if(g.b > {{max:UInt64}}, w.bytes, w.request_count)),
               concat('the usage_daily group (day=', toString({{day:Date}}), ', ',
                      {_group_label_sql()}, ') sums to ', toString(g.b), ' bytes and ',
                      toString(g.r), ' requests, beyond UInt64 (2^64-1): not published'),
               {{publish_id:String}}, now64(6, 'UTC')
        FROM ({overflow_winners_sql(warehouse, overflow)}) AS w
        INNER JOIN {warehouse.table(overflow)} AS g USING ({DIMENSIONS})
        """,
        params,
    )
    rows = warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('quarantined_rows')} "
        "WHERE day = {day:Date} AND run_id = {publish_id:String}",
        params,
    )
    return int(groups), int(rows)


def _store_dimensions(
    warehouse: Warehouse, day: date, dimensions: str
) -> tuple[dict[str, int], int]:
    """Every value each dimension takes among the day's counting rows, sorted, into a one-row
    table (`values_<dimension>` arrays); returns how many values each has, and (read with
    them, from the ledger: no scan) how many of the day's staged rows count.

    The arrays stay in ClickHouse and reach statements as scalar subqueries: sent as query
    parameters they would be SQL text, and a day with many long distinct values (a hostile
    node can write them) would make every statement parse megabytes."""
    table = warehouse.table(dimensions)
    # One grouping set per dimension, in one read: each groups a single LowCardinality column
    # by its dictionary, where groupUniqArray hashed every row's string (a 50,000-account day:
    # 2.2-4.9 s -> 1.5-3.2 s). group_by_use_nulls leaves the other dimensions NULL in a set's
    # rows, and groupArray skips NULLs; the columns themselves are never NULL.
    arrays = ", ".join(f"arraySort(groupArray({d})) AS values_{d}" for d in USAGE_DIMENSIONS)
    sets = ", ".join(f"({d})" for d in USAGE_DIMENSIONS)
    warehouse.command(
        f"""
        CREATE OR REPLACE TABLE {table} ENGINE = Memory AS
        SELECT {arrays} FROM (
            SELECT {DIMENSIONS} FROM ({counting_rows_sql(warehouse)})
            GROUP BY GROUPING SETS ({sets})
        )
        """,
        {"day": day},
        group_by_use_nulls=1,
    )
    counting = f"SELECT sum(loaded_rows) FROM ({counting_loads_sql(warehouse)})"
    *counts, counting_rows = warehouse.query_rows(
        f"SELECT {', '.join(f'length(values_{d})' for d in USAGE_DIMENSIONS)}, "
        f"({counting}) FROM {table}",
        {"day": day},
    )[0]
    counts = dict(zip(USAGE_DIMENSIONS, counts, strict=True))
    return counts, int(counting_rows or 0)


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
        # The ids 1..n as a constant, not `arrayEnumerate` of the values: every scalar subquery
        # is analyzed where it occurs (a small day's grouping: 32 of them, ~100 -> ~75 ms).
        dense = f"arrayMap(i -> toUInt{width}(i), range(1, {int(counts[name]) + 1}))"
        ids.append(f"transform({name}, {values}, {dense}, toUInt{width}(0)) AS i_{name}")
        names.append(f"{values}[i_{name}] AS {name}")
    return ", ".join(ids), ", ".join(names), _hourly_key(counts)


def _id_width(count: int) -> int:
    return 8 if count < 2**8 else 16 if count < 2**16 else 32


@dataclass(frozen=True)
class HourlyKey:
    """usage_hourly's sorting key in dimension ids, as SQL: `encode` builds it from
    `hour_of_day` and the `i_*` ids, `decode` gives them back from a `sort_key` column, and
    `daily` is a `sort_key` with its hour set to 0: the key of its daily group, of the same
    type (decoded by `decode`, with hour_of_day 0)."""

    encode: str
    decode: str
    daily: str


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
        fields = [f"sort_key.{i}" for i in range(1, len(columns) + 1)]
        decode = [f"{field} AS {column}" for field, column in zip(fields, columns, strict=True)]
        hour = columns.index("hour_of_day")
        daily = ["toUInt8(0)" if i == hour else field for i, field in enumerate(fields)]
        return HourlyKey(f"({HOURLY_ORDER_IDS})", ", ".join(decode), f"tuple({', '.join(daily)})")
    kind = "UInt64" if total <= 64 else "UInt128"
    encode, decode = [], []
    for column in columns:
        name = column.removeprefix("i_")
        total -= bits[name]
        width = 8 if name == "hour_of_day" else _id_width(counts[name])
        encode.append(f"bitShiftLeft(to{kind}({column}), {total})")
        field = f"bitAnd(bitShiftRight(sort_key, {total}), {2 ** bits[name] - 1})"
        decode.append(f"toUInt{width}({field}) AS {column}")
        if name == "hour_of_day":  # xor clears the hour's bits and keeps the key's type
            daily = f"bitXor(sort_key, bitShiftLeft(to{kind}({field}), {total}))"
    return HourlyKey(" + ".join(encode), ", ".join(decode), daily)


def _report(
    warehouse: Warehouse,
    build_hourly: str,
    build_daily: str,
    day: date,
    publish_id: str,
    overflow: tuple[int, int],
) -> PublishReport:
    # Day totals in UInt128 (returned as Python ints): a summary figure never fails the day.
    rollups, versions, conflicts, total_bytes, requests, groups = warehouse.query_rows(
        f"""
        SELECT sum(rollups), sum(versions), sum(conflicts), sum(toUInt128(bytes)),
               sum(toUInt128(request_count)), (SELECT count() FROM {warehouse.table(build_daily)})
        FROM {warehouse.table(build_hourly)}
        """
    )[0]
    return PublishReport(
        day, int(rollups), int(versions), int(conflicts), int(total_bytes), int(requests),
        int(groups), publish_id, *overflow,
    )  # fmt: skip


def record_day_publication(
    warehouse: Warehouse, report: PublishReport, load_id: str
) -> dict[str, int]:
    """Log the publication in usage_day_publications, with how many of the day's objects the
    ledger now holds as loaded, quarantined and ignored; returns those counts."""
    objects = ledger.day_state(warehouse, report.day)
    warehouse.insert_json_rows(
        "usage_day_publications",
        [[
            report.day, report.publish_id or load_id, datetime.now(UTC), objects["loaded"],
            objects["quarantined"], objects["ignored"], report.versions, report.rollups,
            report.duplicates, report.conflicts, report.bytes, report.request_count,
        ]],
        [
            "day", "run_id", "published_at", "objects_loaded", "objects_quarantined",
            "objects_ignored", "rows_loaded", "rollups", "duplicates", "conflicts", "bytes",
            "request_count",
        ],
    )  # fmt: skip
    return objects


def top_accounts(warehouse: Warehouse, day: date, limit: int = 10) -> list[dict]:
    return warehouse.query_dicts(
        f"""
        SELECT account_id,
               sumIf(toUInt128(bytes), direction = 'egress') AS egress_bytes,
               sumIf(toUInt128(bytes), direction = 'ingress') AS ingress_bytes,
               sum(toUInt128(request_count)) AS requests
        FROM {warehouse.table("usage_daily")}
        WHERE day = {{day:Date}}
        GROUP BY account_id
        ORDER BY egress_bytes DESC, account_id
        LIMIT {{limit:UInt32}}
        """,
        {"day": day, "limit": limit},
    )
