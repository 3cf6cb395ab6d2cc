"""Reading usage and invoice state from ClickHouse, and publishing a period atomically.

Every value goes through query parameters; only validated identifiers enter SQL text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from usage_etl import crash_points
from usage_etl.invoicing.lines import (
    LINE_COLUMNS,
    Charge,
    ChargeKey,
    InvoiceLine,
    MeterTotals,
)
from usage_etl.invoicing.price_book import (
    MEASURES,
    METERS,
    PREDEFINED,
    WHERE_KEYS,
    PriceBook,
    price_book_from_json,
)
from usage_etl.periods import Period
from usage_etl.warehouse.build_tables import (
    BUILD_PREFIX,
    create_build_table,
    drop_build_tables,
)
from usage_etl.warehouse.client import Warehouse

LINES = "invoice_line_items"
PERIODS = "invoice_periods"
PERIOD_COLUMNS = (
    "period_start", "period_end", "status", "finalized_at", "lines_checksum", "line_count",
    "adjustment_lines", "price_book_version", "price_book", "as_of", "run_id", "recorded_at",
)  # fmt: skip


class FinalizedPeriodError(RuntimeError):
    """Something tried to rewrite a period that is already final."""


# -- usage ----------------------------------------------------------------------------------


def meter_sums(book: PriceBook | None) -> tuple[list[str], str, dict]:
    """SELECT expressions of every meter of `book` (the three v1 meters without a book).

    Sums in UInt128: a month of UInt64 counters can exceed 2^64. A `where` condition becomes
    `has({values:Array(String)}, column)` (or NOT has): the column is one of the validated
    WHERE_KEYS and the measure one of MEASURES; the values are always query parameters.
    """
    names = book.meter_names() if book else list(METERS)
    expressions, params = [], {}
    for index, name in enumerate(names):
        definition = book.meter_definition(name) if book else PREDEFINED[name]
        assert definition.measure in MEASURES
        conditions = []
        for key, condition in definition.where.items():
            assert key in WHERE_KEYS
            param = f"m{index}_{key}"
            params[param] = list(condition.values)
            test = f"has({{{param}:Array(String)}}, toString({key}))"
            conditions.append(f"NOT {test}" if condition.negate else test)
        measure = f"toUInt128({definition.measure})"
        expressions.append(
            f"sumIf({measure}, {' AND '.join(conditions)})" if conditions else f"sum({measure})"
        )
    return names, ", ".join(expressions), params


def meter_totals(
    warehouse: Warehouse, period: Period, book: PriceBook | None = None
) -> MeterTotals:
    """Raw meter totals (before multipliers) per account of one period, from usage_daily
    (plain GROUP BY), for every meter of `book`."""
    names, sums, params = meter_sums(book)
    rows = warehouse.query_rows(
        f"""
        SELECT account_id, {sums}
        FROM {warehouse.table("usage_daily")}
        WHERE day >= {{start:Date}} AND day < {{end:Date}}
        GROUP BY account_id
        ORDER BY account_id
        """,
        {"start": period.start, "end": period.end, **params},
    )
    return {r[0]: dict(zip(names, (int(v) for v in r[1:]), strict=True)) for r in rows}


def meter_totals_by_period(
    warehouse: Warehouse, books: dict[Period, PriceBook]
) -> dict[Period, MeterTotals]:
    """Meter totals of each period in `books`, each with the meters of its own book: one
    query per distinct set of meter definitions."""
    groups: dict[str, list[Period]] = {}
    for period, book in books.items():
        key = json.dumps(
            {name: book.meter_definition(name).model_dump() for name in book.meter_names()},
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(period)
    totals: dict[Period, MeterTotals] = {period: {} for period in books}
    for periods in groups.values():
        names, sums, params = meter_sums(books[periods[0]])
        rows = warehouse.query_rows(
            f"""
            SELECT toStartOfMonth(day) AS period, account_id, {sums}
            FROM {warehouse.table("usage_daily")}
            WHERE toStartOfMonth(day) IN {{periods:Array(Date)}}
            GROUP BY period, account_id
            """,
            {"periods": [p.start for p in periods], **params},
        )
        for period, account, *values in rows:
            totals[Period(period)][account] = dict(
                zip(names, (int(v) for v in values), strict=True)
            )
    return totals


def published_days(warehouse: Warehouse, period: Period) -> set[date]:
    rows = warehouse.query_rows(
        f"""
        SELECT DISTINCT day FROM {warehouse.table("usage_day_publications")}
        WHERE day >= {{start:Date}} AND day < {{end:Date}}
        """,
        {"start": period.start, "end": period.end},
    )
    return {r[0] for r in rows}


def periods_with_usage(warehouse: Warehouse, before: Period) -> set[Period]:
    rows = warehouse.query_rows(
        f"""
        SELECT DISTINCT toStartOfMonth(day) FROM {warehouse.table("usage_daily")}
        WHERE day < {{end:Date}} AND (bytes > 0 OR request_count > 0)
        """,
        {"end": before.start},
    )
    return {Period(r[0]) for r in rows}


def periods_with_lines(warehouse: Warehouse, before: Period) -> set[Period]:
    """Periods before `before` that have stored invoice lines (fee-only invoices included)."""
    rows = warehouse.query_rows(
        f"""
        SELECT DISTINCT period_start FROM {warehouse.table(LINES)}
        WHERE period_start < {{end:Date}}
        """,
        {"end": before.start},
    )
    return {Period(r[0]) for r in rows}


# -- invoice state --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finalization:
    period: Period
    finalized_at: datetime
    lines_checksum: str
    line_count: int
    book: PriceBook


def finalizations(warehouse: Warehouse) -> dict[Period, Finalization]:
    """Every final period, from its (first) 'final' record in the period log."""
    rows = warehouse.query_rows(
        f"""
        SELECT period_start, argMin(finalized_at, recorded_at), argMin(lines_checksum,
               recorded_at), argMin(line_count, recorded_at), argMin(price_book, recorded_at)
        FROM {warehouse.table(PERIODS)}
        WHERE status = 'final'
        GROUP BY period_start
        """
    )
    return {
        Period(r[0]): Finalization(Period(r[0]), r[1], r[2], int(r[3]), price_book_from_json(r[4]))
        for r in rows
    }


def latest_book(warehouse: Warehouse, period: Period) -> PriceBook | None:
    """The price book of the period's latest publication (draft or final)."""
    text = warehouse.query_one(
        f"""
        SELECT argMax(price_book, recorded_at) FROM {warehouse.table(PERIODS)}
        WHERE period_start = {{p:Date}} HAVING count() > 0
        """,
        {"p": period.start},
    )
    return price_book_from_json(text) if text else None


def period_book(
    warehouse: Warehouse, period: Period, finals: dict[Period, Finalization] | None = None
) -> PriceBook | None:
    """The book the period is priced with: its finalization's, else its latest publication's;
    None when the period was never invoiced. `finals`: `finalizations()` if already read."""
    finals = finalizations(warehouse) if finals is None else finals
    return finals[period].book if period in finals else latest_book(warehouse, period)


def billed_charges(warehouse: Warehouse, before: Period) -> dict[Period, dict[ChargeKey, Charge]]:
    """What FINAL lines billed for each period before `before`: its usage lines plus the
    adjustment lines that corrected it, per (account, meter, tier)."""
    rows = warehouse.query_rows(
        f"""
        SELECT if(kind = 'usage', period_start, assumeNotNull(corrected_period_start)) AS billed,
               account_id, meter, tier, sum(quantity), sum(amount),
               argMax(plan, period_start), argMax(unit, period_start),
               argMax(unit_price, period_start)
        FROM {warehouse.table(LINES)}
        WHERE status = 'final' AND period_start < {{end:Date}} AND kind IN ('usage', 'adjustment')
        GROUP BY billed, account_id, meter, tier
        """,
        {"end": before.start},
    )
    billed: dict[Period, dict[ChargeKey, Charge]] = {}
    for period, account, meter, tier, qty, amount, plan, unit, price in rows:
        charge = Charge(account, plan, meter, int(tier), qty, unit, price, amount)
        billed.setdefault(Period(period), {})[charge.key] = charge
    return billed


def billed_period_amounts(
    warehouse: Warehouse, before: Period, kind: str
) -> dict[Period, dict[str, Decimal]]:
    """What FINAL `kind` lines (fixed or minimum) billed for each period before `before`,
    per account: the period's own lines plus the lines that corrected it."""
    rows = warehouse.query_rows(
        f"""
        SELECT ifNull(corrected_period_start, period_start) AS billed, account_id, sum(amount)
        FROM {warehouse.table(LINES)}
        WHERE status = 'final' AND period_start < {{end:Date}} AND kind = {{kind:String}}
        GROUP BY billed, account_id
        """,
        {"end": before.start, "kind": kind},
    )
    billed: dict[Period, dict[str, Decimal]] = {}
    for period, account, amount in rows:
        billed.setdefault(Period(period), {})[account] = amount
    return billed


def credits_consumed(
    warehouse: Warehouse, before: Period, grants: Iterable[str] | None = None
) -> dict[str, Decimal]:
    """Per grant id (all of them, or only `grants`): what the stored credit lines of periods
    before `before` (draft or final) consumed, as a positive amount."""
    rows = warehouse.query_rows(
        f"""
        SELECT reference, -sum(amount) FROM {warehouse.table(LINES)}
        WHERE kind = 'credit' AND period_start < {{end:Date}}
        GROUP BY reference
        """,
        {"end": before.start},
    )
    wanted = None if grants is None else set(grants)
    return {r[0]: r[1] for r in rows if wanted is None or r[0] in wanted}


def credits_consumed_all(warehouse: Warehouse) -> dict[str, Decimal]:
    """Per grant id: what every stored credit line (all periods) consumed."""
    rows = warehouse.query_rows(
        f"""
        SELECT reference, -sum(amount) FROM {warehouse.table(LINES)}
        WHERE kind = 'credit' GROUP BY reference
        """
    )
    return {r[0]: r[1] for r in rows}


def read_lines(warehouse: Warehouse, period: Period, account_id: str | None = None) -> list[dict]:
    account_filter = "AND account_id = {account:String}" if account_id is not None else ""
    return warehouse.query_dicts(
        f"""
        SELECT {", ".join(LINE_COLUMNS)} FROM {warehouse.table(LINES)}
        WHERE period_start = {{p:Date}} {account_filter}
        ORDER BY account_id, kind = 'adjustment', corrected_period_start, meter, tier, reference,
                 line_id
        """,
        {"p": period.start, "account": account_id},
    )


def read_invoices(
    warehouse: Warehouse, period: Period, account_id: str | None = None
) -> list[dict]:
    account_filter = "AND account_id = {account:String}" if account_id is not None else ""
    return warehouse.query_dicts(
        f"""
        SELECT invoice_id, account_id, period_start, period_end, currency, subtotal, status,
               finalized_at
        FROM {warehouse.table("invoices")}
        WHERE period_start = {{p:Date}} {account_filter}
        ORDER BY account_id, invoice_id
        """,
        {"p": period.start, "account": account_id},
    )


# -- checksums ------------------------------------------------------------------------------


def _canonical(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


CHECKSUM_COLUMNS = tuple(c for c in LINE_COLUMNS if c != "reference")


def lines_checksum(rows: Iterable[dict]) -> str:
    """sha256 of the lines as stored (all columns, ordered by line_id).

    `reference` (added with price book v2) is hashed only when it is not '', so the checksum
    of a period finalized before the column existed is unchanged."""
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["line_id"]):
        h.update("\x1f".join(_canonical(row[c]) for c in CHECKSUM_COLUMNS).encode())
        if row.get("reference"):
            h.update(b"\x1freference=" + row["reference"].encode())
        h.update(b"\n")
    return h.hexdigest()


def stored_checksum(warehouse: Warehouse, period: Period) -> tuple[str, int]:
    rows = read_lines(warehouse, period)
    return lines_checksum(rows), len(rows)


# -- publishing -----------------------------------------------------------------------------


def publish_lines(
    warehouse: Warehouse, period: Period, lines: list[InvoiceLine], run_id: str
) -> None:
    """Replace the period's lines atomically; refuse if the period is already final.

    The new lines go into a build table of this run's own (so concurrent runs never mix),
    then one REPLACE PARTITION swaps them in: readers see the old period or the new one.
    """
    if period in finalizations(warehouse):
        raise FinalizedPeriodError(
            f"period {period} is final; its invoice lines are never rewritten"
        )
    if any(line.period_start != period.start for line in lines):
        raise ValueError(f"every line published for {period} must belong to {period}")
    target = warehouse.table(LINES)
    if not lines:  # REPLACE PARTITION refuses an empty source: drop the period instead
        warehouse.command(f"ALTER TABLE {target} DROP PARTITION {{p:Date}}", {"p": period.start})
        return
    build_name = f"{BUILD_PREFIX}{LINES}_{hashlib.sha256(run_id.encode()).hexdigest()[:16]}"
    build = warehouse.table(build_name)
    drop_build_tables(warehouse, build_name)
    create_build_table(warehouse, build_name, LINES)  # plain MergeTree if replicated
    try:
        warehouse.insert_rows(build_name, [line.row() for line in lines], LINE_COLUMNS)
        crash_points.fault_point("invoices.before_swap")
        warehouse.command(
            f"ALTER TABLE {target} REPLACE PARTITION {{p:Date}} FROM {build}", {"p": period.start}
        )
        crash_points.fault_point("invoices.before_record")
    finally:
        drop_build_tables(warehouse, build_name)


def record_publication(warehouse: Warehouse, row: dict) -> None:
    warehouse.insert_rows(PERIODS, [[row[c] for c in PERIOD_COLUMNS]], PERIOD_COLUMNS)


def is_final(warehouse: Warehouse, period: Period) -> bool:
    return period in finalizations(warehouse)
