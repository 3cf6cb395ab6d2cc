"""The object ledger (`ingest_objects`): what each object under a day's prefix became.

Append-only: a run appends one row per object it decided about. The *current* entry of a key
is its latest row, so an overwritten object (new ETag) is simply decided again, and rows loaded
from an earlier version stop counting. Loaded rows count only when their (key, etag, load_id)
is the key's current entry: leftovers of a crashed or retried attempt never do.
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


def current_loads_sql(warehouse: Warehouse) -> str:
    """A subquery of (key, etag, load_id) whose rows count for `{day:Date}`."""
    return f"""
        SELECT object_key, argMax(etag, recorded_at), argMax(run_id, recorded_at)
        FROM {warehouse.table("ingest_objects")}
        WHERE day = {{day:Date}}
        GROUP BY object_key
        HAVING argMax(status, recorded_at) = 'loaded'
    """


def record(warehouse: Warehouse, rows: list[list]) -> None:
    warehouse.insert_rows("ingest_objects", rows, LEDGER_COLUMNS)


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
