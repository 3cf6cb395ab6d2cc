"""Why an invoice line says what it says: `explain_invoice(warehouse, invoice_id)`.

For a `usage` line (one tier of one meter) the explanation walks back from the line to the
files the nodes wrote:

* the meter's definition (measure, unit, where, multiplier) and the tier's bounds;
* the meter's exact quantity Q = multiplier × raw / unit, its daily quantities and its split by
  node and by project, each adding up to Q exactly (Fractions, no rounding);
* how the tier takes its slice: part = min(max(Q − lower, 0), upper − lower), the days that
  filled it (days in date order fill the tiers in turn), and stored quantity = the slice
  rounded half up to 9 decimals = the line's quantity;
* the source objects (object key, ETag) of every day: the rollup rows that counted, copies of a
  counted version (identical re-deliveries), versions superseded by a later emitted_at, and
  versions that lost an equal-emitted_at conflict; the counted rows add up to the published
  usage exactly.

An `adjustment` line is the same walk over the corrected (final) period with today's usage,
minus what final lines already billed for that (meter, tier). A `fixed` line shows the plan's
fee; a `minimum` line the true-up max(0, minimum − (usage lines + fixed fee)) (for a correction
of a final period: the true-up on today's usage minus the one billed); a `credit` line the
grant, what earlier periods consumed of it, the invoice's total before credits and what this
invoice consumes.

Which staged rows count is the ingest code's own rule (the counting rows SQL the publish uses)
and its content hash; among the versions of one event_id, the greatest (emitted_at, content hash)
wins, as in `latest_versions_sql`. Every explanation carries checks (the equalities above);
`ok` is False when usage changed after the line was computed (a stale draft, or late usage of
a final period that an adjustment line on a later invoice bills).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction

from usage_etl.invoicing.exact import exact_text, nine
from usage_etl.invoicing.lines import price_usage
from usage_etl.invoicing.meter_view import MeterDefinition, MeterPricing, plan_fees, plan_meters
from usage_etl.invoicing.price_book import PriceBook, TierCharge
from usage_etl.invoicing.store import LINES, latest_book, meter_totals, read_lines
from usage_etl.periods import Period

# The usage area's own rules: which versions win (dedupe) and which staged rows count (ledger).
from usage_etl.usage.dedupe import VERSION_ORDER
from usage_etl.usage.ledger import counting_rows_sql
from usage_etl.warehouse.client import Warehouse

DIMENSIONS = (
    "project_id", "region", "node_id", "direction", "operation", "artifact_kind", "network_path",
)  # fmt: skip

COUNTED, REDELIVERED, SUPERSEDED, CONFLICT = "counted", "redelivered", "superseded", "conflict"


class UnknownInvoiceError(LookupError):
    """No invoice (or no line) with that id."""


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageCell:
    """One usage_daily row of the account (a day and its dimension values)."""

    day: date
    dims: dict[str, str]
    bytes: int
    request_count: int

    def measure(self, name: str) -> int:
        return self.bytes if name == "bytes" else self.request_count


def read_usage_cells(warehouse: Warehouse, account_id: str, period: Period) -> list[UsageCell]:
    rows = warehouse.query_rows(
        f"""
        SELECT day, {", ".join(DIMENSIONS)}, sum(toUInt128(bytes)), sum(toUInt128(request_count))
        FROM {warehouse.table("usage_daily")}
        WHERE account_id = {{account:String}} AND day >= {{start:Date}} AND day < {{end:Date}}
        GROUP BY day, {", ".join(DIMENSIONS)}
        ORDER BY day, {", ".join(DIMENSIONS)}
        """,
        {"account": account_id, "start": period.start, "end": period.end},
    )
    n = len(DIMENSIONS)
    return [
        UsageCell(r[0], dict(zip(DIMENSIONS, r[1 : n + 1], strict=True)), int(r[n + 1]),
                  int(r[n + 2]))
        for r in rows
    ]  # fmt: skip


@dataclass(frozen=True)
class SourceGroup:
    """Staged rows of one object (key, ETag) of one day, of one role, whose rollup's counted
    version has the dimension values `dims`."""

    day: date
    object_key: str
    etag: str
    role: str
    dims: dict[str, str]
    rows: int
    bytes: int
    request_count: int

    def measure(self, name: str) -> int:
        return self.bytes if name == "bytes" else self.request_count


def read_sources(warehouse: Warehouse, account_id: str, day: date) -> list[SourceGroup]:
    """Every staged row of the day's counting loads that is a version of one of the account's
    rollups, by object and role. The counted copy of a version is the first by (object key,
    ETag, row) among its identical copies."""
    rows_sql = counting_rows_sql(warehouse)
    winner = ", ".join(f"winner.{i + 2} AS w_{d}" for i, d in enumerate(DIMENSIONS))
    sql = f"""
        SELECT source_key, source_etag, role, {", ".join(f"w_{d}" for d in DIMENSIONS)},
               count(), sum(toUInt128(bytes)), sum(toUInt128(request_count))
        FROM (
            SELECT source_key, source_etag, bytes, request_count, {winner},
                   multiIf(rank = 1, '{COUNTED}', version = best, '{REDELIVERED}',
                           version.1 = best.1, '{CONFLICT}', '{SUPERSEDED}') AS role,
                   winner.1 AS w_account
            FROM (
                SELECT source_key, source_etag, bytes, request_count,
                       {VERSION_ORDER} AS version,
                       max(version) OVER (PARTITION BY event_id) AS best,
                       argMax((account_id, {", ".join(DIMENSIONS)}), version)
                           OVER (PARTITION BY event_id) AS winner,
                       row_number() OVER (
                           PARTITION BY event_id
                           ORDER BY version DESC, source_key, source_etag, source_row
                       ) AS rank
                FROM ({rows_sql})
                WHERE event_id IN (
                    SELECT event_id FROM ({rows_sql}) WHERE account_id = {{account:String}}
                )
            )
        )
        WHERE w_account = {{account:String}}
        GROUP BY source_key, source_etag, role, {", ".join(f"w_{d}" for d in DIMENSIONS)}
        ORDER BY source_key, source_etag, role
    """
    n = len(DIMENSIONS)
    return [
        SourceGroup(day, r[0], r[1], r[2], dict(zip(DIMENSIONS, r[3 : n + 3], strict=True)),
                    int(r[n + 3]), int(r[n + 4]), int(r[n + 5]))
        for r in warehouse.query_rows(sql, {"day": day, "account": account_id})
    ]  # fmt: skip


def republished_after(warehouse: Warehouse, period: Period, moment: datetime) -> list[date]:
    """Days of `period` published again after `moment` (late usage of a final period)."""
    rows = warehouse.query_rows(
        f"""
        SELECT day FROM {warehouse.table("usage_day_publications")}
        WHERE day >= {{start:Date}} AND day < {{end:Date}}
        GROUP BY day HAVING max(published_at) > {{at:DateTime64(6, 'UTC')}}
        ORDER BY day
        """,
        {"start": period.start, "end": period.end, "at": moment},
    )
    return [r[0] for r in rows]


# -- one meter's usage ----------------------------------------------------------------------


@dataclass
class ObjectPart:
    """One source object's part in one meter's usage on one day."""

    day: date
    object_key: str
    etag: str
    counted_rows: int = 0
    counted_measure: int = 0
    redelivered_rows: int = 0
    superseded_rows: int = 0
    conflict_rows: int = 0

    def as_dict(self) -> dict:
        return {
            "day": self.day.isoformat(), "object_key": self.object_key, "etag": self.etag,
            "counted_rows": self.counted_rows, "counted_measure": self.counted_measure,
            "redelivered_rows": self.redelivered_rows, "superseded_rows": self.superseded_rows,
            "conflict_rows": self.conflict_rows,
        }  # fmt: skip


@dataclass
class MeterUsage:
    """One meter of one account and period: raw totals by day, node, project and object."""

    definition: MeterDefinition
    period: Period
    days: dict[date, int] = field(default_factory=dict)
    nodes: dict[tuple[str, str], int] = field(default_factory=dict)  # (node_id, region)
    projects: dict[str, int] = field(default_factory=dict)
    objects: list[ObjectPart] = field(default_factory=list)

    @property
    def raw(self) -> int:
        return sum(self.days.values())

    @property
    def quantity(self) -> Fraction:
        return self.definition.quantity(self.raw)

    @property
    def sources_raw(self) -> int:
        return sum(o.counted_measure for o in self.objects)


def meter_usage(
    definition: MeterDefinition,
    period: Period,
    cells: list[UsageCell],
    sources: list[SourceGroup],
) -> MeterUsage:
    usage = MeterUsage(definition, period)
    days: dict[date, int] = defaultdict(int)
    nodes: dict[tuple[str, str], int] = defaultdict(int)
    projects: dict[str, int] = defaultdict(int)
    for cell in cells:
        if not definition.matches(cell.dims):
            continue
        raw = cell.measure(definition.measure)
        if raw:
            days[cell.day] += raw
            nodes[(cell.dims["node_id"], cell.dims["region"])] += raw
            projects[cell.dims["project_id"]] += raw
    objects: dict[tuple[date, str, str], ObjectPart] = {}
    for group in sources:
        if not definition.matches(group.dims):
            continue
        part = objects.setdefault(
            (group.day, group.object_key, group.etag),
            ObjectPart(group.day, group.object_key, group.etag),
        )
        if group.role == COUNTED:
            part.counted_rows += group.rows
            part.counted_measure += group.measure(definition.measure)
        elif group.role == REDELIVERED:
            part.redelivered_rows += group.rows
        elif group.role == CONFLICT:
            part.conflict_rows += group.rows
        else:
            part.superseded_rows += group.rows
    usage.days = dict(sorted(days.items()))
    usage.nodes = dict(sorted(nodes.items()))
    usage.projects = dict(sorted(projects.items()))
    usage.objects = [objects[k] for k in sorted(objects)]
    return usage


# -- explanations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One equality the explanation rests on, with both sides exact."""

    name: str
    left: str
    right: str
    ok: bool

    def as_dict(self) -> dict:
        return {"name": self.name, "left": self.left, "right": self.right, "ok": self.ok}


def check(name: str, left, right) -> Check:
    return Check(name, _text(left), _text(right), left == right)


def _text(value) -> str:
    if isinstance(value, Fraction | int):
        return exact_text(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


@dataclass
class LineExplanation:
    line: dict
    rule: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    meter: MeterDefinition | None = None
    tier: dict | None = None
    usage: MeterUsage | None = None
    day_tier_parts: dict[date, Fraction] = field(default_factory=dict)
    billed: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def total(self) -> Decimal | None:
        """The quantity the explanation arrives at (as stored), for comparison with the line."""
        for name, value in self.figures:
            if name == "explained quantity":
                return Decimal(value)
        return None

    def as_dict(self) -> dict:
        out: dict = {
            "line_id": self.line["line_id"],
            "kind": self.line["kind"],
            "meter": self.line["meter"],
            "tier": self.line["tier"],
            "quantity": format(self.line["quantity"], "f"),
            "unit": self.line["unit"],
            "unit_price": format(self.line["unit_price"], "f"),
            "amount": format(self.line["amount"], "f"),
            "corrected_period_start": _iso(self.line.get("corrected_period_start")),
            "rule": self.rule,
            "figures": dict(self.figures),
            "checks": [c.as_dict() for c in self.checks],
            "ok": self.ok,
            "notes": self.notes,
        }
        if self.meter is not None:
            out["meter_definition"] = self.meter.as_dict()
        if self.tier is not None:
            out["tier_bounds"] = self.tier
        if self.usage is not None:
            u, d = self.usage, self.usage.definition
            out["usage"] = {
                "period": str(u.period),
                "raw_total": u.raw,
                "quantity": exact_text(u.quantity),
                "days": [
                    {"day": day.isoformat(), "raw": raw, "quantity": exact_text(d.quantity(raw)),
                     "tier_part": exact_text(self.day_tier_parts.get(day, Fraction(0)))}
                    for day, raw in u.days.items()
                ],
                "nodes": [
                    {"node_id": node, "region": region, "raw": raw,
                     "quantity": exact_text(d.quantity(raw))}
                    for (node, region), raw in u.nodes.items()
                ],
                "projects": [
                    {"project_id": project, "raw": raw, "quantity": exact_text(d.quantity(raw))}
                    for project, raw in u.projects.items()
                ],
                "objects": [o.as_dict() for o in u.objects],
            }  # fmt: skip
        if self.billed:
            out["billed"] = self.billed
        return out


@dataclass
class InvoiceExplanation:
    invoice: dict
    lines: list[LineExplanation]
    whole: bool = True  # every line of the invoice (not one --line)

    @property
    def checks(self) -> list[Check]:
        if not self.whole:
            return []
        total = sum((line.line["amount"] for line in self.lines), Decimal(0))
        return [check("lines add up to the subtotal", total, self.invoice["subtotal"])]

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict:
        inv = self.invoice
        return {
            "invoice_id": inv["invoice_id"],
            "account_id": inv["account_id"],
            "period_start": inv["period_start"].isoformat(),
            "status": inv["status"],
            "subtotal": format(inv["subtotal"], "f"),
            "currency": inv["currency"],
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "lines": [line.as_dict() for line in self.lines],
        }


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


class _Context:
    """Reads shared by the lines of one invoice (usage and sources per period, books)."""

    def __init__(self, warehouse: Warehouse, account_id: str, fallback: PriceBook | None):
        self.warehouse = warehouse
        self.account_id = account_id
        self.fallback = fallback
        self._cells: dict[Period, list[UsageCell]] = {}
        self._sources: dict[Period, list[SourceGroup]] = {}
        self._books: dict[Period, PriceBook | None] = {}
        self._lines: dict[Period, list[dict]] = {}

    def book(self, period: Period) -> PriceBook:
        if period not in self._books:
            self._books[period] = latest_book(self.warehouse, period)
        book = self._books[period] or self.fallback
        if book is None:
            raise LookupError(f"no price book recorded for {period}")
        return book

    def cells(self, period: Period) -> list[UsageCell]:
        if period not in self._cells:
            self._cells[period] = read_usage_cells(self.warehouse, self.account_id, period)
        return self._cells[period]

    def sources(self, period: Period) -> list[SourceGroup]:
        if period not in self._sources:
            days = sorted({c.day for c in self.cells(period)})
            self._sources[period] = [
                g for day in days for g in read_sources(self.warehouse, self.account_id, day)
            ]
        return self._sources[period]

    def lines(self, period: Period) -> list[dict]:
        if period not in self._lines:
            self._lines[period] = read_lines(self.warehouse, period, self.account_id)
        return self._lines[period]

    def repriced_usage(self, period: Period, book: PriceBook) -> Decimal:
        """The account's usage of `period` priced now with `book` (the invoicing code)."""
        totals = meter_totals(self.warehouse, period, book)
        mine = {self.account_id: totals[self.account_id]} if self.account_id in totals else {}
        return sum((c.amount for c in price_usage(mine, book, period.start)), Decimal(0))

    def pricing(self, period: Period, plan: str, meter: str) -> MeterPricing:
        meters = plan_meters(self.book(period), plan)
        if meter not in meters:
            raise LookupError(f"plan {plan!r} of {period} does not bill meter {meter!r}")
        return meters[meter]

    def usage(self, period: Period, pricing: MeterPricing) -> MeterUsage:
        return meter_usage(pricing.definition, period, self.cells(period), self.sources(period))


def find_invoice(warehouse: Warehouse, invoice_id: str) -> dict:
    rows = warehouse.query_dicts(
        f"""
        SELECT invoice_id, account_id, period_start, period_end, currency, subtotal, status,
               finalized_at
        FROM {warehouse.table("invoices")} WHERE invoice_id = {{id:String}}
        """,
        {"id": invoice_id},
    )
    if not rows:
        raise UnknownInvoiceError(f"no invoice {invoice_id!r}")
    return rows[0]


def explain_invoice(
    warehouse: Warehouse,
    invoice_id: str,
    line_id: str | None = None,
    book: PriceBook | None = None,
) -> InvoiceExplanation:
    """Explain every line of the invoice (or only `line_id`). `book` is used for a period
    whose price book was never recorded (the books of published periods are)."""
    invoice = find_invoice(warehouse, invoice_id)
    period = Period(invoice["period_start"])
    context = _Context(warehouse, invoice["account_id"], book)
    lines = [
        line
        for line in context.lines(period)
        if line["invoice_id"] == invoice_id and (line_id is None or line["line_id"] == line_id)
    ]
    if line_id is not None and not lines:
        raise UnknownInvoiceError(f"invoice {invoice_id} has no line {line_id!r}")
    explained = [explain_line(context, line) for line in lines]
    return InvoiceExplanation(invoice, explained, whole=line_id is None)


def explain_line(context: _Context, line: dict) -> LineExplanation:
    kind = line["kind"]
    if kind == "usage":
        return _explain_usage(context, line)
    if kind == "adjustment" and line["meter"]:
        return _explain_adjustment(context, line)
    return _explain_other(context, line)


def _tier_figures(pricing: MeterPricing, tier: int) -> dict:
    lower, upper = pricing.bounds(tier)
    return {
        "tier": tier,
        "lower": exact_text(lower),
        "upper": None if upper is None else exact_text(upper),
        "unit_price": format(pricing.tiers[tier - 1].unit_price, "f"),
        "rule": f"tier {tier} bills the part of the quantity in ({exact_text(lower)}, "
        + ("unbounded" if upper is None else exact_text(upper))
        + "]",
    }


def _day_tier_parts(pricing: MeterPricing, usage: MeterUsage, tier: int) -> dict[date, Fraction]:
    """Days in date order fill the tiers in turn: a day's part of the tier is the tier part
    of the running total after it minus the one before it (adds up to the tier's part)."""
    parts, before, running = {}, Fraction(0), 0
    for day, raw in usage.days.items():
        running += raw
        after = pricing.tier_part(usage.definition.quantity(running), tier)
        parts[day] = after - before
        before = after
    return parts


def _usage_walk(explanation: LineExplanation, pricing: MeterPricing, usage: MeterUsage) -> None:
    """Figures and checks shared by usage and adjustment lines: raw → quantity → tier part."""
    tier = explanation.line["tier"]
    d = usage.definition
    explanation.meter, explanation.usage = d, usage
    explanation.tier = _tier_figures(pricing, tier)
    explanation.day_tier_parts = _day_tier_parts(pricing, usage, tier)
    part = pricing.tier_part(usage.quantity, tier)
    explanation.figures += [
        ("period", str(usage.period)),
        ("raw total", f"{usage.raw} {d.measure}"),
        ("meter quantity", f"{exact_text(d.multiplier)} × {usage.raw} / {d.unit_size} = "
                           f"{exact_text(usage.quantity)} {d.unit}"),
        ("tier part (exact)", exact_text(part)),
    ]  # fmt: skip
    explanation.checks += [
        check("days add up to the raw total", sum(usage.days.values(), 0), usage.raw),
        check("nodes add up to the raw total", sum(usage.nodes.values(), 0), usage.raw),
        check("projects add up to the raw total", sum(usage.projects.values(), 0), usage.raw),
        check("counted rows of the source objects add up to the raw total",
              usage.sources_raw, usage.raw),
        check("days' tier parts add up to the tier part",
              sum(explanation.day_tier_parts.values(), Fraction(0)), part),
    ]  # fmt: skip


def _explain_usage(context: _Context, line: dict) -> LineExplanation:
    period = Period(line["period_start"])
    pricing = context.pricing(period, line["plan"], line["meter"])
    explanation = LineExplanation(
        line,
        rule="usage: the part of the meter's exact period quantity inside this tier's bounds, "
        "stored rounded half up to 9 decimals; amount = ROUND_HALF_UP(exact part × unit "
        "price, 2)",
    )
    usage = context.usage(period, pricing)
    _usage_walk(explanation, pricing, usage)
    part = pricing.tier_part(usage.quantity, line["tier"])
    amount = TierCharge(line["tier"], part, line["unit_price"]).amount
    explanation.figures += [
        ("explained quantity", format(nine(part), "f")),
        ("explained amount", format(amount, "f")),
    ]
    explanation.checks += [
        check("tier part rounded to 9 decimals = line quantity", nine(part), line["quantity"]),
        check("ROUND_HALF_UP(part × unit price, 2) = line amount", amount, line["amount"]),
    ]
    if not all(c.ok for c in explanation.checks[-2:]):
        explanation.notes.append(
            "the published usage differs from what this line was computed from: the draft is "
            "stale (re-run the period), or late usage of a final period is billed as "
            "adjustment lines on a later invoice"
        )
    return explanation


def _billed_before(warehouse: Warehouse, line: dict) -> list[dict]:
    """Final lines that billed the corrected period's (meter, tier) before this invoice."""
    return warehouse.query_dicts(
        f"""
        SELECT invoice_id, line_id, period_start, kind, quantity, amount
        FROM {warehouse.table(LINES)}
        WHERE status = 'final' AND account_id = {{account:String}} AND meter = {{meter:String}}
          AND tier = {{tier:UInt8}} AND period_start < {{target:Date}}
          AND ((kind = 'usage' AND period_start = {{corrected:Date}})
               OR (kind = 'adjustment' AND corrected_period_start = {{corrected:Date}}))
        ORDER BY period_start, line_id
        """,
        {
            "account": line["account_id"], "meter": line["meter"], "tier": line["tier"],
            "target": line["period_start"], "corrected": line["corrected_period_start"],
        },
    )  # fmt: skip


def _explain_adjustment(context: _Context, line: dict) -> LineExplanation:
    corrected = Period(line["corrected_period_start"])
    pricing = context.pricing(corrected, line["plan"], line["meter"])
    explanation = LineExplanation(
        line,
        rule=f"adjustment: late usage of the final period {corrected}: the (meter, tier) "
        "repriced with that period's own price book on today's usage, minus what its final "
        "lines billed so far",
    )
    usage = context.usage(corrected, pricing)
    _usage_walk(explanation, pricing, usage)
    part = pricing.tier_part(usage.quantity, line["tier"])
    now_amount = TierCharge(line["tier"], part, pricing.tiers[line["tier"] - 1].unit_price).amount
    billed = _billed_before(context.warehouse, line)
    billed_quantity = sum((b["quantity"] for b in billed), Decimal(0))
    billed_amount = sum((b["amount"] for b in billed), Decimal(0))
    explanation.billed = [
        {"invoice_id": b["invoice_id"], "line_id": b["line_id"], "kind": b["kind"],
         "period_start": b["period_start"].isoformat(), "quantity": format(b["quantity"], "f"),
         "amount": format(b["amount"], "f")}
        for b in billed
    ]  # fmt: skip
    quantity = nine(part) - billed_quantity
    amount = now_amount - billed_amount
    explanation.figures += [
        ("quantity now (stored)", format(nine(part), "f")),
        ("amount now", format(now_amount, "f")),
        ("billed quantity", format(billed_quantity, "f")),
        ("billed amount", format(billed_amount, "f")),
        ("explained quantity", format(quantity, "f")),
        ("explained amount", format(amount, "f")),
    ]
    explanation.checks += [
        check("quantity now − billed = line quantity", quantity, line["quantity"]),
        check("amount now − billed = line amount", amount, line["amount"]),
    ]
    moment = context.warehouse.query_one(
        f"""
        SELECT min(finalized_at) FROM {context.warehouse.table("invoice_periods")}
        WHERE period_start = {{p:Date}} AND status = 'final' HAVING count() > 0
        """,
        {"p": corrected.start},
    )
    late = republished_after(context.warehouse, corrected, moment) if moment else []
    if late:
        explanation.notes.append(
            "days republished after the period was finalized: "
            + ", ".join(d.isoformat() for d in late)
        )
    return explanation


def _explain_other(context: _Context, line: dict) -> LineExplanation:
    kind = line["kind"]
    if kind == "fixed":
        return _explain_fixed(context, line)
    if kind == "minimum":
        return _explain_minimum(context, line)
    if kind == "credit":
        return _explain_credit(context, line)
    return LineExplanation(line, rule=f"{kind}: no explanation for this kind of line")


def _money(value: Decimal) -> str:
    return format(value, "f")


def _period_line_checks(explanation: LineExplanation, amount: Decimal) -> None:
    """A fixed, minimum or credit line: quantity 1, unit_price = amount = the rule's figure."""
    line = explanation.line
    explanation.figures += [("explained quantity", "1"), ("explained amount", _money(amount))]
    explanation.checks += [
        check("quantity is 1 period", line["quantity"], Decimal(1)),
        check("unit price = amount", line["unit_price"], line["amount"]),
        check("rule's amount = line amount", amount, line["amount"]),
    ]


def _invoice_lines(context: _Context, line: dict) -> list[dict]:
    period = Period(line["period_start"])
    return [other for other in context.lines(period) if other["invoice_id"] == line["invoice_id"]]


def _explain_fixed(context: _Context, line: dict) -> LineExplanation:
    period = Period(line["period_start"])
    fixed, _ = plan_fees(context.book(period), line["plan"])
    explanation = LineExplanation(
        line, rule=f"fixed: the fixed fee of plan {line['plan']!r}, on every invoice of the plan"
    )
    explanation.figures.append(("plan fixed_fee", _money(fixed or Decimal(0))))
    _period_line_checks(explanation, fixed or Decimal(0))
    return explanation


def _explain_minimum(context: _Context, line: dict) -> LineExplanation:
    if line["corrected_period_start"] is not None:
        return _explain_minimum_correction(context, line)
    period = Period(line["period_start"])
    _, minimum = plan_fees(context.book(period), line["plan"])
    minimum = minimum or Decimal(0)
    own = _invoice_lines(context, line)
    usage = sum((o["amount"] for o in own if o["kind"] == "usage"), Decimal(0))
    fixed = sum((o["amount"] for o in own if o["kind"] == "fixed"), Decimal(0))
    true_up = max(Decimal(0), minimum - (usage + fixed))
    explanation = LineExplanation(
        line,
        rule="minimum: commitment true-up = max(0, minimum − (the period's own usage lines + "
        "fixed fee)); adjustments for earlier periods do not count",
    )
    explanation.figures += [
        ("plan minimum", _money(minimum)),
        ("usage lines", _money(usage)),
        ("fixed fee", _money(fixed)),
        ("true-up", f"max(0, {minimum} − ({usage} + {fixed})) = {true_up}"),
    ]
    _period_line_checks(explanation, true_up)
    return explanation


def _explain_minimum_correction(context: _Context, line: dict) -> LineExplanation:
    corrected = Period(line["corrected_period_start"])
    book = context.book(corrected)
    _, minimum = plan_fees(book, line["plan"])
    minimum = minimum or Decimal(0)
    usage_now = context.repriced_usage(corrected, book)
    billed = context.warehouse.query_rows(
        f"""
        SELECT kind, sum(amount) FROM {context.warehouse.table(LINES)}
        WHERE status = 'final' AND account_id = {{account:String}}
          AND kind IN ('fixed', 'minimum') AND period_start < {{target:Date}}
          AND ifNull(corrected_period_start, period_start) = {{corrected:Date}}
        GROUP BY kind
        """,
        {"account": line["account_id"], "target": line["period_start"],
         "corrected": corrected.start},
    )  # fmt: skip
    amounts = {kind: amount for kind, amount in billed}
    fixed = amounts.get("fixed", Decimal(0))
    billed_true_up = amounts.get("minimum", Decimal(0))
    now = max(Decimal(0), minimum - (usage_now + fixed))
    explanation = LineExplanation(
        line,
        rule=f"minimum (correction of final {corrected}): the true-up recomputed on today's "
        "usage of that period, minus the true-up its final lines billed",
    )
    explanation.figures += [
        ("plan minimum", _money(minimum)),
        (f"usage of {corrected} repriced today", _money(usage_now)),
        (f"fixed fee billed for {corrected}", _money(fixed)),
        ("true-up now", f"max(0, {minimum} − ({usage_now} + {fixed})) = {now}"),
        ("true-up billed", _money(billed_true_up)),
        ("change", f"{now} − {billed_true_up} = {now - billed_true_up}"),
    ]
    _period_line_checks(explanation, now - billed_true_up)
    return explanation


def _explain_credit(context: _Context, line: dict) -> LineExplanation:
    period = Period(line["period_start"])
    book = context.book(period)
    grants = book.grants_usable(line["account_id"], period.start)
    grant = next((g for g in grants if g.id == line["reference"]), None)
    explanation = LineExplanation(
        line,
        rule="credit: the invoice consumes its usable grants (earliest `until`, then id), each "
        "up to its remaining balance, until its total before credits reaches 0",
    )
    if grant is None:
        explanation.notes.append(f"grant {line['reference']!r} is not usable on {period}")
        return explanation
    consumed_before = consumed_by_earlier(context.warehouse, period, grant.id)
    own = _invoice_lines(context, line)
    total = sum((o["amount"] for o in own if o["kind"] != "credit"), Decimal(0))
    order = [g.id for g in grants]
    earlier_credits = -sum(
        (o["amount"] for o in own
         if o["kind"] == "credit" and o["reference"] in order
         and order.index(o["reference"]) < order.index(grant.id)),
        Decimal(0),
    )  # fmt: skip
    remaining = grant.amount - consumed_before
    left = total - earlier_credits
    take = min(remaining, left)
    explanation.figures += [
        ("grant", f"{grant.id}: {grant.amount} usable on periods in [{grant.from_}, "
                  f"{grant.until})"),
        ("consumed by earlier periods", _money(consumed_before)),
        ("remaining before this invoice", f"{grant.amount} − {consumed_before} = {remaining}"),
        ("invoice total before credits", _money(total)),
        ("taken by grants used before it", _money(earlier_credits)),
        ("this invoice consumes", f"min({remaining}, {total} − {earlier_credits}) = {take}"),
        ("remaining after this invoice", _money(remaining - take)),
    ]  # fmt: skip
    _period_line_checks(explanation, -take)
    return explanation


def consumed_by_earlier(warehouse: Warehouse, period: Period, grant_id: str) -> Decimal:
    """What stored credit lines of periods before `period` (draft or final) took from a grant."""
    value = warehouse.query_one(
        f"""
        SELECT -sum(amount) FROM {warehouse.table(LINES)}
        WHERE kind = 'credit' AND reference = {{grant:String}} AND period_start < {{p:Date}}
        """,
        {"grant": grant_id, "p": period.start},
    )
    return Decimal(value or 0)
