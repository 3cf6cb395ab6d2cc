"""The object ledger (`ingest_objects`): what each object under a day's prefix became.

Append-only: a run appends one row per object version (key, ETag) it decided about. The
*current* entry of a key is its latest row: it tells what to skip on the next run (same ETag)
and what the object is now.

Which staged rows count (contract §1, "a version, once read from any object, stays delivered")
is decided by `counting_loads_sql` alone, and every reader of staged rows goes through it
(`counting_rows_sql`): the rows of every object version ever loaded, not only the current one.
Overwriting an object with other content, or deleting it, therefore retracts nothing; only a
version with a greater emitted_at replaces one, at dedupe. Per (key, ETag) the latest decision
names the load whose rows count, so the same content loaded twice (concurrent runs, or judged
again under a changed node registry) counts once and under the rules in force. Rows with no
ledger entry (a crashed or retried attempt, a native attempt handed back) never count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from usage_etl.warehouse.client import Warehouse

LEDGER_COLUMNS = (
    "day", "object_key", "etag", "size", "last_modified", "node_id", "hour", "format",
    "status", "reason", "rows_read", "rows_loaded", "rows_quarantined", "run_id", "recorded_at",
)  # fmt: skip


@dataclass(frozen=True)
class LedgerEntry:
    object_key: str
    etag: str
    status: str
    reason: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    load_id: str


def current_entries(warehouse: Warehouse, day: date) -> dict[str, LedgerEntry]:
    rows = warehouse.query_rows(
        f"""
        SELECT object_key,
               argMax(etag, recorded_at), toString(argMax(status, recorded_at)),
               argMax(reason, recorded_at), argMax(rows_read, recorded_at),
               argMax(rows_loaded, recorded_at), argMax(rows_quarantined, recorded_at),
               argMax(run_id, recorded_at)
        FROM {warehouse.table("ingest_objects")}
        WHERE day = {{day:Date}}
        GROUP BY object_key
        """,
        {"day": day},
    )
    return {r[0]: LedgerEntry(*r) for r in rows}


def counting_loads_sql(warehouse: Warehouse) -> str:
    """THE rule: a subquery of (object_key, etag, run_id, loaded_rows), the loads whose rows
    count for `{day:Date}`: for every version (key, ETag) of an object ever decided, its latest
    decision, if that decision was `loaded`. (The ledger's `run_id` column holds load ids.)"""
    return f"""
        SELECT object_key, etag, argMax(run_id, recorded_at) AS run_id,
               argMax(rows_loaded, recorded_at) AS loaded_rows
        FROM {warehouse.table("ingest_objects")}
        WHERE day = {{day:Date}}
        GROUP BY object_key, etag
        HAVING argMax(status, recorded_at) = 'loaded'
    """


def decided_versions_sql(warehouse: Warehouse) -> str:
    """(object_key, etag, run_id) of the latest decision about every object version of
    `{day:Date}`, whatever it was: the quarantine that belongs to the counting state."""
    return f"""
        SELECT object_key, etag, argMax(run_id, recorded_at) AS run_id
        FROM {warehouse.table("ingest_objects")}
        WHERE day = {{day:Date}}
        GROUP BY object_key, etag
    """


def counting_rows_sql(warehouse: Warehouse) -> str:
    """The staged rows of `{day:Date}` that count (before dedupe): those of the counting loads.

    Rows are matched on load_key, the 128-bit hash of their (source_key, source_etag, run_id)
    computed on insert (sql/005): the odds that a stale load's key equals a counting one's are
    ~1e-34 per pair, far below any hardware error rate, at 1/40 of the cost of the tuple."""
    return f"""
        SELECT * FROM {warehouse.table("rollup_rows")}
        WHERE day = {{day:Date}}
          AND load_key IN (
              SELECT sipHash128(object_key, etag, run_id)
              FROM ({counting_loads_sql(warehouse)})
          )
    """


def counting_row_count(warehouse: Warehouse, day: date) -> int:
    """Staged rows that count for the day, from the ledger (no scan of the staged rows)."""
    total = warehouse.query_one(
        f"SELECT sum(loaded_rows) FROM ({counting_loads_sql(warehouse)})", {"day": day}
    )
    return int(total or 0)


def record(warehouse: Warehouse, rows: list[list]) -> None:
    warehouse.insert_json_rows("ingest_objects", rows, LEDGER_COLUMNS)


def ledger_row(
    *,
    day: date,
    key: str,
    etag: str,
    size: int,
    last_modified: datetime,
    node_id: str,
    hour: int,
    fmt: str,
    status: str,
    reason: str,
    rows_read: int,
    rows_loaded: int,
    rows_quarantined: int,
    load_id: str,
    recorded_at: datetime,
) -> list:
    return [
        day, key, etag, size, last_modified, node_id, hour, fmt, status, reason,
        rows_read, rows_loaded, rows_quarantined, load_id, recorded_at,
    ]  # fmt: skip
