"""The usage statement of an invoice: one row per day × project × meter, adding up exactly to
the invoice's usage lines.

Each row carries the raw measure total (an integer: bytes or requests the meter's `where`
selects), the exact quantity (multiplier × raw / unit, a terminating decimal written in full)
and `quantity`, a Decimal(38, 9) share of the invoiced quantity. The lines of one meter store
each tier's part rounded to 9 decimals, so rounding every row on its own would not add up to
them. The rule instead:

    S(x)        = sum over tiers of ROUND_HALF_UP(tier part of x, 9)   (what the lines store
                  for a meter quantity x: usage_etl.invoicing.price_book's own split)
    C_i         = exact quantity of the meter's rows 1..i, rows in (day, project_id) order
    quantity_i  = S(C_i) − S(C_{i−1})

The sum telescopes: the rows of a meter add up to S(total) = the sum of that meter's usage line
quantities, exactly; each row's quantity differs from its exact quantity by less than one
nano-unit per tier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pyarrow as pa

from usage_etl.invoicing.exact import exact_text
from usage_etl.invoicing.explain import DIMENSIONS
from usage_etl.invoicing.meter_view import plan_meters
from usage_etl.invoicing.price_book import PriceBook
from usage_etl.invoicing.store import latest_book
from usage_etl.periods import Period
from usage_etl.warehouse.client import Warehouse

STATEMENT_COLUMNS = (
    "invoice_id", "account_id", "plan", "period_start", "day", "project_id", "meter", "measure",
    "measure_total", "multiplier", "unit", "quantity_exact", "quantity", "price_book_version",
)  # fmt: skip
STATEMENT_SCHEMA = pa.schema(
    [
        ("invoice_id", pa.string()), ("account_id", pa.string()), ("plan", pa.string()),
        ("period_start", pa.date32()), ("day", pa.date32()), ("project_id", pa.string()),
        ("meter", pa.string()), ("measure", pa.string()),
        ("measure_total", pa.decimal128(38, 0)), ("multiplier", pa.string()),
        ("unit", pa.string()), ("quantity_exact", pa.string()),
        ("quantity", pa.decimal128(38, 9)), ("price_book_version", pa.string()),
    ]
)  # fmt: skip
STATEMENT_RULE = (
    "rows of one meter in (day, project_id) order; quantity_i = S(C_i) - S(C_{i-1}) where C_i "
    "is the exact quantity of rows 1..i and S(x) the sum of x's tier parts each rounded half "
    "up to 9 decimals: the rows add up exactly to the meter's usage lines"
)


@dataclass(frozen=True)
class StatementCheck:
    invoice_id: str
    meter: str
    statement: Decimal
    lines: Decimal

    @property
    def ok(self) -> bool:
        return self.statement == self.lines


def _cells(warehouse: Warehouse, period: Period, account_id: str | None, keys: list) -> dict:
    """account -> [(day, dims, bytes, request_count)] from usage_daily, grouped by day,
    project and only the dimensions `keys` the meters' `where` conditions look at (a month of
    a large fleet stays a few rows per account, day and project)."""
    account_filter = "AND account_id = {account:String}" if account_id is not None else ""
    columns = ["project_id", *sorted(set(keys) - {"project_id"})]
    assert set(columns) <= set(DIMENSIONS)  # fixed column names only
    rows = warehouse.query_rows(
        f"""
        SELECT account_id, day, {", ".join(columns)},
               sum(toUInt128(bytes)), sum(toUInt128(request_count))
        FROM {warehouse.table("usage_daily")}
        WHERE day >= {{start:Date}} AND day < {{end:Date}} {account_filter}
        GROUP BY account_id, day, {", ".join(columns)}
        """,
        {"start": period.start, "end": period.end, "account": account_id},
    )
    n = len(columns)
    cells: dict[str, list] = defaultdict(list)
    for r in rows:
        dims = dict(zip(columns, r[2 : n + 2], strict=True))
        cells[r[0]].append((r[1], dims, int(r[n + 2]), int(r[n + 3])))
    return cells


def statement_rows(
    warehouse: Warehouse,
    period: Period,
    lines: list[dict],
    book: PriceBook | None = None,
    account_id: str | None = None,
) -> list[dict]:
    """The statement of every invoice of `period` that has usage lines among `lines` (the
    period's lines as read_lines returns them). `book` is used only when the period has no
    recorded price book."""
    usage = [line for line in lines if line["kind"] == "usage"]
    if account_id is not None:
        usage = [line for line in usage if line["account_id"] == account_id]
    if not usage:
        return []
    book = latest_book(warehouse, period) or book
    if book is None:
        raise LookupError(f"no price book recorded for {period}")
    invoices = {}
    for line in usage:
        invoices.setdefault(line["invoice_id"], line)
    plans = {line["plan"]: plan_meters(book, line["plan"]) for line in invoices.values()}
    keys = [c.key for meters in plans.values() for m in meters.values() for c in m.definition.where]
    cells = _cells(warehouse, period, account_id, keys)
    rows = []
    for invoice_id, first in sorted(invoices.items(), key=lambda i: i[1]["account_id"]):
        billed = {line["meter"] for line in usage if line["invoice_id"] == invoice_id}
        meters = plans[first["plan"]]
        for name in [m for m in meters if m in billed]:
            rows += _meter_rows(first, meters[name], cells.get(first["account_id"], []))
    return rows


def _meter_rows(line: dict, pricing, cells: list) -> list[dict]:
    definition = pricing.definition
    raw: dict[tuple, int] = defaultdict(int)
    for day, dims, nbytes, requests in cells:
        if definition.matches(dims):
            raw[(day, dims["project_id"])] += nbytes if definition.measure == "bytes" else requests
    rows, running, before = [], 0, Decimal(0)
    for (day, project), total in sorted(raw.items()):
        if not total:
            continue
        running += total
        after = pricing.stored_total(definition.quantity(running))
        rows.append(
            {
                "invoice_id": line["invoice_id"], "account_id": line["account_id"],
                "plan": line["plan"], "period_start": line["period_start"], "day": day,
                "project_id": project, "meter": definition.name,
                "measure": definition.measure, "measure_total": Decimal(total),
                "multiplier": format(definition.multiplier, "f"), "unit": definition.unit,
                "quantity_exact": exact_text(definition.quantity(total)),
                "quantity": after - before,
                "price_book_version": line["price_book_version"],
            }
        )  # fmt: skip
        before = after
    return rows


def check_statement(rows: list[dict], lines: list[dict]) -> list[StatementCheck]:
    """Per (invoice, meter): the statement's quantities against the usage lines'."""
    statement: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    billed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        statement[(row["invoice_id"], row["meter"])] += row["quantity"]
    for line in lines:
        if line["kind"] == "usage":
            billed[(line["invoice_id"], line["meter"])] += line["quantity"]
    return [
        StatementCheck(invoice, meter, statement[(invoice, meter)], billed[(invoice, meter)])
        for invoice, meter in sorted(statement.keys() | billed.keys())
    ]


def exact_sum(rows: list[dict]) -> Fraction:
    """The exact quantity of statement rows (from quantity_exact)."""
    return sum((Fraction(Decimal(r["quantity_exact"])) for r in rows), Fraction(0))
