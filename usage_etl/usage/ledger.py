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

This module is the one door to the ledger: every query of an object's current entry goes
through `latest_sql` (its latest row by recorded_at), and invoicing, the audits and
reconciliation call the functions below rather than reading `ingest_objects` themselves. The
ledger's load ids are read as `load_id` (sql/010: an ALIAS of the physical column `run_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse

# The columns a ledger row is inserted with. The load id goes to the physical column `run_id`
# (its name since sql/002); readers use its ALIAS `load_id` (sql/010).
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


# The period filter of the ledger queries over a billing period (query parameters only).
IN_PERIOD = "day >= {start:Date} AND day < {end:Date}"
ON_DAY = "day = {day:Date}"


def latest_sql(
    warehouse: Warehouse,
    columns: tuple[str, ...],
    *,
    per: str = "object_key",
    where: str = ON_DAY,
) -> str:
    """THE current-entry rule, the only one: a subquery with one row per `per` (`object_key`:
    an object; `object_key, etag`: one version of it) holding the values of `columns` from its
    latest ledger row (greatest recorded_at), under the columns' own names. `where` filters the
    ledger rows first (ON_DAY, `{day:Date}`, or IN_PERIOD, `{start:Date}` and `{end:Date}`)."""
    latest = ", ".join(f"argMax({c}, recorded_at) AS {c}" for c in columns)
    return f"""
        SELECT {per}, {latest}
        FROM {warehouse.table("ingest_objects")}
        WHERE {where}
        GROUP BY {per}
    """


def current_entries(warehouse: Warehouse, day: date) -> dict[str, LedgerEntry]:
    current = latest_sql(
        warehouse,
        ("etag", "status", "reason", "rows_read", "rows_loaded", "rows_quarantined", "load_id"),
    )
    rows = warehouse.query_rows(
        f"""
        SELECT object_key, etag, toString(status), reason, rows_read, rows_loaded,
               rows_quarantined, load_id
        FROM ({current})
        """,
        {"day": day},
    )
    return {r[0]: LedgerEntry(*r) for r in rows}


def day_state(warehouse: Warehouse, day: date) -> dict[str, int]:
    """How many objects of the day are currently loaded, quarantined and ignored."""
    entries = current_entries(warehouse, day).values()
    return {
        s: sum(1 for e in entries if e.status == s) for s in ("loaded", "quarantined", "ignored")
    }


def current_etags(warehouse: Warehouse, period: Period) -> dict[str, str]:
    """The ETag of the current entry of every object key of the period's days."""
    rows = warehouse.query_rows(
        f"SELECT object_key, etag FROM ({latest_sql(warehouse, ('etag',), where=IN_PERIOD)})",
        {"start": period.start, "end": period.end},
    )
    return dict(rows)


def current_objects_sql(warehouse: Warehouse, where: str = ON_DAY) -> str:
    """(object_key, day, node_id, hour, status, last_modified, delivered) of every object of
    `{day:Date}` (or of the days `where` selects, e.g. IN_PERIOD: an object key names its day)
    as its current entry has it; `delivered`: some version of it was loaded and its rows count
    (counting_loads_sql), even if the object was overwritten since (contract §1: nothing is
    retracted)."""
    # Grouped by (object_key, day), the same as by object_key: a key is under one day's prefix.
    columns = ("node_id", "hour", "status", "last_modified")
    current = latest_sql(warehouse, columns, per="object_key, day", where=where)
    return f"""
        SELECT object_key, day, node_id, hour, status, last_modified,
               object_key IN (SELECT object_key FROM ({counting_loads_sql(warehouse, where)}))
                   AS delivered
        FROM ({current})
    """


def counting_loads_sql(warehouse: Warehouse, where: str = ON_DAY) -> str:
    """THE rule: a subquery of (object_key, etag, load_id, loaded_rows), the loads whose rows
    count for `{day:Date}` (or the days `where` selects): for every version (key, ETag) of an
    object ever decided, its latest decision, if that decision was `loaded`."""
    latest = latest_sql(
        warehouse, ("load_id", "rows_loaded", "status"), per="object_key, etag", where=where
    )
    return f"""
        SELECT object_key, etag, load_id, rows_loaded AS loaded_rows
        FROM ({latest})
        WHERE status = 'loaded'
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
              SELECT sipHash128(object_key, etag, load_id)
              FROM ({counting_loads_sql(warehouse)})
          )
    """


def version(warehouse: Warehouse, day: date) -> int:
    """Rows of the day's append-only ledger: grows with every decision any run records."""
    return warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('ingest_objects')} WHERE day = {{day:Date}}",
        {"day": day},
    )


def days_with_entries(warehouse: Warehouse, period: Period) -> set[date]:
    """The period's days that have any ledger entry."""
    rows = warehouse.query_rows(
        f"SELECT DISTINCT day FROM {warehouse.table('ingest_objects')} WHERE {IN_PERIOD}",
        {"start": period.start, "end": period.end},
    )
    return {r[0] for r in rows}


def last_recorded_sql(warehouse: Warehouse) -> str:
    """(day, recorded): when each day of the period [`{start:Date}`, `{end:Date}`) last had a
    decision recorded."""
    return f"""
        SELECT day, max(recorded_at) AS recorded FROM {warehouse.table("ingest_objects")}
        WHERE {IN_PERIOD} GROUP BY day
    """


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
