"""Compaction of settled days, off the daily run's path.

Three tables keep a day in the parts its writers made, because background merges only combine
small parts there (sql/006, sql/011): merging them inside the daily run cost ~40% of its CPU
(`rollup_rows`), or competed with the day's checks and was cut off at the run's exit
(`usage_hourly`, `usage_daily`: ~10 parts for a 10M-row day, one or two per account bucket).
Left alone, though, parts pile up (~36 per 10M-row load of rollup_rows, more per re-run) and
every later run pays for them when the engine opens: 14,400 such parts (400 days) took 8.6 s to
load. So a maintenance run merges each settled day of each table into one part, once, at a
quiet hour: a day is settled a few days after it ended (the job's `settle_days`, default 3),
when late files have mostly landed; a later re-run only adds the parts of objects that changed
(rollup_rows) or swaps in a new publication (the usage tables).

Merging never changes what a reader sees: all three are plain MergeTrees that keep every row,
and a day of the usage tables is one partition replaced whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from usage_etl.warehouse.client import Warehouse, WarehouseError

# The tables compacted, each partitioned by day.
COMPACTED_TABLES = ("rollup_rows", "usage_hourly", "usage_daily")
# A settled day with more active parts than this is merged into one.
COMPACT_ABOVE_PARTS = 4
# Days merged per table and maintenance run at most (the oldest first): bounds the first runs
# after an upgrade, ~10 s of merging per 10M-row day of rollup_rows on two cores.
MAX_DAYS_PER_RUN = 31
# ClickHouse's answer when a background merge holds some of the partition's parts.
CANNOT_ASSIGN_OPTIMIZE = "Code: 388"


@dataclass(frozen=True)
class DayCompaction:
    table: str
    day: date
    parts_before: int
    parts_after: int
    rows: int

    @property
    def compacted(self) -> bool:
        return self.parts_after < self.parts_before


def fragmented_days(
    warehouse: Warehouse, table: str, settled_before: date, above_parts: int = COMPACT_ABOVE_PARTS
) -> list[tuple[date, int, int]]:
    """(day, active parts, rows) of each day of `table` before `settled_before` with more than
    `above_parts` parts, oldest first."""
    return [
        tuple(row)
        for row in warehouse.query_rows(
            """
            SELECT toDate(partition) AS day, count() AS parts, sum(rows) AS rows
            FROM system.parts
            WHERE database = {database:String} AND table = {table:String} AND active
            GROUP BY partition
            HAVING day < {settled_before:Date} AND parts > {above_parts:UInt32}
            ORDER BY day
            """,
            {
                "database": warehouse.database,
                "table": table,
                "settled_before": settled_before,
                "above_parts": above_parts,
            },
        )
    ]


def compact_settled_days(
    warehouse: Warehouse,
    settled_before: date,
    above_parts: int = COMPACT_ABOVE_PARTS,
    max_days: int = MAX_DAYS_PER_RUN,
) -> list[DayCompaction]:
    """Merge each fragmented settled day of each of COMPACTED_TABLES into one part (at most
    `max_days` per table)."""
    results = []
    for table in COMPACTED_TABLES:
        days = fragmented_days(warehouse, table, settled_before, above_parts)[:max_days]
        for day, parts, rows in days:
            try:
                warehouse.command(
                    f"OPTIMIZE TABLE {warehouse.table(table)} PARTITION {{day:Date}} FINAL",
                    {"day": day},
                    optimize_throw_if_noop=1,
                )
            except WarehouseError as exc:
                if CANNOT_ASSIGN_OPTIMIZE not in str(exc):
                    raise
                # A background merge holds some of its parts: the day waits for the next run.
            results.append(
                DayCompaction(table, day, parts, _active_parts(warehouse, table, day), rows)
            )
    return results


def _active_parts(warehouse: Warehouse, table: str, day: date) -> int:
    return warehouse.query_one(
        """
        SELECT count() FROM system.parts
        WHERE database = {database:String} AND table = {table:String} AND active
          AND toDate(partition) = {day:Date}
        """,
        {"database": warehouse.database, "table": table, "day": day},
    )
