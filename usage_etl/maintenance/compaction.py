"""Compaction of settled staging days, off the daily run's path.

`rollup_rows` keeps a day's bulk load in the parts the insert wrote (sql/006: background merges
only combine small parts), because merging them inside the daily run cost ~40% of its CPU.
Left alone, though, parts pile up (~36 per 10M-row load, more per re-run) and every later run
pays for them when the engine opens: 14,400 such parts (400 days) took 8.6 s to load. So a
maintenance run merges each settled day into one part, once, at a quiet hour: a day is settled
a few days after it ended (the job's `settle_days`, default 3), when late files have mostly
landed; a later re-run only adds the parts of objects that changed.

Merging never changes what a reader sees: rollup_rows is a plain MergeTree that keeps every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from usage_etl.warehouse.client import Warehouse, WarehouseError

# A settled day with more active parts than this is merged into one.
COMPACT_ABOVE_PARTS = 4
# Days merged per maintenance run at most (the oldest first): bounds the first runs after an
# upgrade, ~10 s of merging per 10M-row day on two cores.
MAX_DAYS_PER_RUN = 31
# ClickHouse's answer when a background merge holds some of the partition's parts.
CANNOT_ASSIGN_OPTIMIZE = "Code: 388"


@dataclass(frozen=True)
class DayCompaction:
    day: date
    parts_before: int
    parts_after: int
    rows: int

    @property
    def compacted(self) -> bool:
        return self.parts_after < self.parts_before


def fragmented_days(
    warehouse: Warehouse, settled_before: date, above_parts: int = COMPACT_ABOVE_PARTS
) -> list[tuple[date, int, int]]:
    """(day, active parts, rows) of each staged day before `settled_before` with more than
    `above_parts` parts, oldest first."""
    return [
        tuple(row)
        for row in warehouse.query_rows(
            """
            SELECT toDate(partition) AS day, count() AS parts, sum(rows) AS rows
            FROM system.parts
            WHERE database = {database:String} AND table = 'rollup_rows' AND active
            GROUP BY partition
            HAVING day < {settled_before:Date} AND parts > {above_parts:UInt32}
            ORDER BY day
            """,
            {
                "database": warehouse.database,
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
    """Merge each fragmented settled day of rollup_rows into one part (at most `max_days`)."""
    results = []
    for day, parts, rows in fragmented_days(warehouse, settled_before, above_parts)[:max_days]:
        try:
            warehouse.command(
                f"OPTIMIZE TABLE {warehouse.table('rollup_rows')} PARTITION {{day:Date}} FINAL",
                {"day": day},
                optimize_throw_if_noop=1,
            )
        except WarehouseError as exc:
            if CANNOT_ASSIGN_OPTIMIZE not in str(exc):
                raise
            # A background merge holds some of its parts: the day waits for the next run.
        results.append(DayCompaction(day, parts, _active_parts(warehouse, day), rows))
    return results


def _active_parts(warehouse: Warehouse, day: date) -> int:
    return warehouse.query_one(
        """
        SELECT count() FROM system.parts
        WHERE database = {database:String} AND table = 'rollup_rows' AND active
          AND toDate(partition) = {day:Date}
        """,
        {"database": warehouse.database, "day": day},
    )
