"""Read API over the published usage: what one account moved, where, and on which node.

`usage_report(warehouse, query)` answers for one window:

* totals of egress bytes, ingress bytes and requests, and the same totals for the previous
  window of equal length (the trend);
* a time series per region, zero-filled over the whole window: hourly buckets from
  `usage_hourly` for windows up to 24 h, daily buckets from `usage_daily` beyond;
* a per-node table (combined bytes descending) and a per-artifact-kind breakdown.

Egress here is all `direction='egress'` bytes, private network included: this is what the
account moved, not the billed `egress_bytes` meter (see docs/finance.md for that).

Windows are half-open `[start, end)` in UTC. Relative ranges (`24h`, `7d`, …) end at the last
complete hour (hour ranges) or day (day ranges) before `as_of`, because days are published only
after they end. Every value reaches ClickHouse as a query parameter; the SQL text holds only
fixed fragments and validated table names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction

from usage_etl.settings import parse_as_of
from usage_etl.warehouse.client import Warehouse

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_WINDOW = timedelta(days=3660)  # ten years of daily buckets; beyond that is a typo
METRICS = ("egress_bytes", "ingress_bytes", "requests")
_RELATIVE = re.compile(r"^(\d{1,5})([hd])$")

# UInt128 sums: a window's total never wraps, whatever its length.
METRICS_SQL = """
    sumIf(toUInt128(bytes), direction = 'egress') AS egress_bytes,
    sumIf(toUInt128(bytes), direction = 'ingress') AS ingress_bytes,
    sum(toUInt128(request_count)) AS requests
"""


class Granularity(StrEnum):
    hour = "hour"
    day = "day"


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval `[start, end)` and the bucket size its series uses."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if bound.tzinfo is None or bound.utcoffset() != timedelta(0):
                raise ValueError(f"window bounds must be UTC datetimes, got {bound!r}")
        if self.end <= self.start:
            raise ValueError(f"a window must end after it starts: {self.start} .. {self.end}")
        if self.length > MAX_WINDOW:
            raise ValueError(f"a window may span at most {MAX_WINDOW.days} days")
        if not _aligned(self.start, HOUR) or not _aligned(self.end, HOUR):
            raise ValueError("window bounds must fall on whole UTC hours")
        if self.granularity is Granularity.day and not (
            _aligned(self.start, DAY) and _aligned(self.end, DAY)
        ):
            raise ValueError("a window longer than 24 h must start and end at 00:00 UTC")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def granularity(self) -> Granularity:
        return Granularity.hour if self.length <= DAY else Granularity.day

    @property
    def step(self) -> timedelta:
        return HOUR if self.granularity is Granularity.hour else DAY

    def previous(self) -> Window:
        """The window of equal length just before this one."""
        return Window(self.start - self.length, self.start)

    def buckets(self) -> list[datetime]:
        count = self.length // self.step
        return [self.start + i * self.step for i in range(count)]

    @property
    def label(self) -> str:
        """The window as `--range` takes it: whole days inclusive, or times with TO excluded."""
        if _aligned(self.start, DAY) and _aligned(self.end, DAY):
            return f"{self.start:%Y-%m-%d}..{self.end - DAY:%Y-%m-%d}"
        return f"{self.start:%Y-%m-%dT%H:%MZ}..{self.end:%Y-%m-%dT%H:%MZ}"


def _aligned(moment: datetime, step: timedelta) -> bool:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) % step == timedelta(0)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment.astimezone(UTC) - epoch) // step) * step


def _bound(text: str, *, is_end: bool) -> datetime:
    """`YYYY-MM-DD` (a whole day; inclusive as an end) or an ISO-8601 time (UTC if naive)."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + DAY if is_end else start
    parsed = parse_as_of(text)
    if parsed is None:
        raise ValueError("empty range bound")
    return parsed


def parse_window(text: str, as_of: datetime | None = None) -> Window:
    """`24h`, `7d`, `30d` (any `Nh` with N ≤ 24, any `Nd`) relative to `as_of`, or `FROM..TO`.

    `FROM..TO` takes dates (`2026-10-01..2026-10-07`: both days included) or ISO times
    (`2026-10-05T06:00Z..2026-10-05T18:00Z`: TO excluded).
    """
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        count, unit = int(relative.group(1)), relative.group(2)
        if count == 0:
            raise ValueError("a range must be at least 1h or 1d")
        if unit == "h":
            if count > 24:
                raise ValueError("hour ranges go up to 24h; use days (e.g. 7d) beyond")
            end = _floor(as_of, HOUR)
            return Window(end - count * HOUR, end)
        end = _floor(as_of, DAY)
        return Window(end - count * DAY, end)
    if ".." in text:
        first, _, last = text.partition("..")
        return Window(_bound(first, is_end=False), _bound(last, is_end=True))
    raise ValueError(f"range must be 24h, 7d, 30d or FROM..TO, got {text!r}")


@dataclass(frozen=True)
class UsageQuery:
    """Whose usage to read. `project_id=None` means every project; `''` means traffic that
    was not bound to a project. `artifact_kind=None` means every kind."""

    account_id: str
    window: Window
    project_id: str | None = None
    artifact_kind: str | None = None

    def __post_init__(self) -> None:
        if not self.account_id:
            raise ValueError("an account id is required")


@dataclass(frozen=True)
class Totals:
    egress_bytes: int = 0
    ingress_bytes: int = 0
    requests: int = 0

    @property
    def total_bytes(self) -> int:
        return self.egress_bytes + self.ingress_bytes

    def get(self, metric: str) -> int:
        return getattr(self, metric)


@dataclass(frozen=True)
class Change:
    """One metric against the previous window: absolute and percent change (None from 0)."""

    metric: str
    current: int
    previous: int

    @property
    def delta(self) -> int:
        return self.current - self.previous

    @property
    def percent(self) -> Decimal | None:
        if self.previous == 0:
            return None
        ratio = Decimal(self.delta * 100) / Decimal(self.previous)
        return ratio.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class SeriesPoint:
    bucket: datetime
    region: str
    totals: Totals


@dataclass(frozen=True)
class NodeUsage:
    node_id: str
    region: str
    totals: Totals


@dataclass(frozen=True)
class KindUsage:
    artifact_kind: str
    totals: Totals


@dataclass(frozen=True)
class UsageReport:
    query: UsageQuery
    totals: Totals
    previous_totals: Totals
    series: list[SeriesPoint] = field(default_factory=list)
    nodes: list[NodeUsage] = field(default_factory=list)
    kinds: list[KindUsage] = field(default_factory=list)

    @property
    def window(self) -> Window:
        return self.query.window

    @property
    def previous_window(self) -> Window:
        return self.query.window.previous()

    @property
    def regions(self) -> list[str]:
        return sorted({point.region for point in self.series})

    def trend(self) -> list[Change]:
        return [Change(m, self.totals.get(m), self.previous_totals.get(m)) for m in METRICS]


# -- SQL ----------------------------------------------------------------------------------------


def _source(warehouse: Warehouse, window: Window) -> tuple[str, str, str]:
    """(table, bucket expression, time condition) for the window's granularity."""
    if window.granularity is Granularity.hour:
        # `day` bounds let ClickHouse prune partitions before it looks at `hour`.
        condition = (
            "day >= toDate({start:DateTime('UTC')}) AND day <= toDate({end:DateTime('UTC')}) "
            "AND hour >= {start:DateTime('UTC')} AND hour < {end:DateTime('UTC')}"
        )
        return warehouse.table("usage_hourly"), "hour", condition
    condition = "day >= toDate({start:DateTime('UTC')}) AND day < toDate({end:DateTime('UTC')})"
    return warehouse.table("usage_daily"), "day", condition


def _where(query: UsageQuery, window: Window) -> tuple[str, dict]:
    conditions = ["account_id = {account:String}"]
    params: dict = {
        "account": query.account_id,
        # Naive UTC strings: the placeholders declare the 'UTC' zone themselves.
        "start": window.start.strftime("%Y-%m-%d %H:%M:%S"),
        "end": window.end.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if query.project_id is not None:
        conditions.append("project_id = {project:String}")
        params["project"] = query.project_id
    if query.artifact_kind is not None:
        conditions.append("artifact_kind = {kind:String}")
        params["kind"] = query.artifact_kind
    return " AND ".join(conditions), params


def _select(
    warehouse: Warehouse, query: UsageQuery, window: Window, keys: tuple[str, ...] = ()
) -> list[dict]:
    """The three metrics grouped by `keys` (fixed column names; `bucket` is the time bucket)."""
    table, bucket, time_condition = _source(warehouse, window)
    filters, params = _where(query, window)
    columns = "".join(f"{bucket} AS bucket, " if k == "bucket" else f"{k}, " for k in keys)
    group = f"GROUP BY {', '.join(keys)}" if keys else ""
    sql = f"SELECT {columns}{METRICS_SQL} FROM {table} WHERE {filters} AND {time_condition} {group}"
    return warehouse.query_dicts(sql, params)


def _totals(row: dict) -> Totals:
    return Totals(int(row["egress_bytes"]), int(row["ingress_bytes"]), int(row["requests"]))


def read_totals(warehouse: Warehouse, query: UsageQuery, window: Window) -> Totals:
    rows = _select(warehouse, query, window)
    return _totals(rows[0]) if rows else Totals()


def _as_utc(bucket: datetime | date) -> datetime:
    if isinstance(bucket, datetime):
        return bucket.replace(tzinfo=UTC) if bucket.tzinfo is None else bucket.astimezone(UTC)
    return datetime(bucket.year, bucket.month, bucket.day, tzinfo=UTC)


def read_series(warehouse: Warehouse, query: UsageQuery) -> list[SeriesPoint]:
    """Per region and bucket, zero-filled over the whole window, sorted by (bucket, region)."""
    found = {
        (_as_utc(row["bucket"]), row["region"]): _totals(row)
        for row in _select(warehouse, query, query.window, ("bucket", "region"))
    }
    regions = sorted({region for _, region in found})
    return [
        SeriesPoint(bucket, region, found.get((bucket, region), Totals()))
        for bucket in query.window.buckets()
        for region in regions
    ]


def read_nodes(warehouse: Warehouse, query: UsageQuery) -> list[NodeUsage]:
    """Per node, combined (egress + ingress) bytes descending, then node id."""
    rows = _select(warehouse, query, query.window, ("node_id", "region"))
    nodes = [NodeUsage(r["node_id"], r["region"], _totals(r)) for r in rows]
    return sorted(nodes, key=lambda n: (-n.totals.total_bytes, n.node_id, n.region))


def read_kinds(warehouse: Warehouse, query: UsageQuery) -> list[KindUsage]:
    """Per artifact kind, combined bytes descending, then kind."""
    rows = _select(warehouse, query, query.window, ("artifact_kind",))
    kinds = [KindUsage(r["artifact_kind"], _totals(r)) for r in rows]
    return sorted(kinds, key=lambda k: (-k.totals.total_bytes, k.artifact_kind))


def usage_report(warehouse: Warehouse, query: UsageQuery) -> UsageReport:
    return UsageReport(
        query=query,
        totals=read_totals(warehouse, query, query.window),
        previous_totals=read_totals(warehouse, query, query.window.previous()),
        series=read_series(warehouse, query),
        nodes=read_nodes(warehouse, query),
        kinds=read_kinds(warehouse, query),
    )


# -- what exists ------------------------------------------------------------------------------


def account_exists(warehouse: Warehouse, account_id: str) -> bool:
    """Whether the account has any published usage at all (any day)."""
    return bool(
        warehouse.query_rows(
            f"SELECT 1 FROM {warehouse.table('usage_daily')} "
            "WHERE account_id = {account:String} LIMIT 1",
            {"account": account_id},
        )
    )


def known_accounts(warehouse: Warehouse, limit: int = 100_000) -> list[str]:
    """Accounts with published usage, sorted (for "did you mean" suggestions)."""
    rows = warehouse.query_rows(
        f"SELECT DISTINCT account_id FROM {warehouse.table('usage_daily')} "
        "ORDER BY account_id LIMIT {limit:UInt32}",
        {"limit": limit},
    )
    return [r[0] for r in rows]


def latest_data_end(warehouse: Warehouse, whole_days: bool = False) -> datetime | None:
    """An `as_of` at the end of the latest published data: the end of its latest hour, or with
    `whole_days` of its latest day (so `7d` ends with that day, `24h` with that hour). None
    when nothing is published."""
    day = warehouse.query_one(f"SELECT max(day) FROM {warehouse.table('usage_daily')}")
    if day is None or day <= date(1970, 1, 1):  # max() of an empty table is the zero date
        return None
    if whole_days:
        return _as_utc(day) + DAY
    hour = warehouse.query_one(
        f"SELECT max(hour) FROM {warehouse.table('usage_hourly')} WHERE day = {{day:Date}}",
        {"day": day},
    )
    if hour is None or _as_utc(hour).date() != day:
        return _as_utc(day) + DAY
    return _as_utc(hour) + HOUR


# -- billable vs non-billable (price book meters) -------------------------------------------

BILLABLE_DIMENSIONS = (
    "project_id", "region", "node_id", "direction", "operation", "artifact_kind", "network_path",
)  # fmt: skip


@dataclass(frozen=True)
class BillableGroup:
    """One project (`''` = none) or artifact kind: each meter's exact quantity (in its unit)
    and the bytes and requests no meter of the plan counts."""

    by: str  # project_id | artifact_kind
    key: str
    meters: dict[str, Fraction]
    unbilled_bytes: int
    unbilled_requests: int


@dataclass(frozen=True)
class BillableUsage:
    plan: str
    units: dict[str, str]  # meter -> unit
    groups: list[BillableGroup]

    def of(self, by: str) -> list[BillableGroup]:
        return [g for g in self.groups if g.by == by]


def billable_usage(warehouse: Warehouse, query: UsageQuery, book) -> BillableUsage:
    """Per project and per artifact kind: what each meter of the account's plan (the plan in
    force for the month the window starts in) counts, and what none of them counts."""
    from usage_etl.invoicing.meter_view import plan_for, plan_meters
    from usage_etl.periods import Period

    plan = plan_for(book, query.account_id, Period.containing(query.window.start.date()))
    meters = plan_meters(book, plan)
    table, _, time_condition = _source(warehouse, query.window)
    filters, params = _where(query, query.window)
    dims = ", ".join(BILLABLE_DIMENSIONS)
    rows = warehouse.query_rows(
        f"SELECT {dims}, sum(toUInt128(bytes)), sum(toUInt128(request_count)) FROM {table} "
        f"WHERE {filters} AND {time_condition} GROUP BY {dims}",
        params,
    )
    groups: dict[tuple[str, str], list] = {}
    n = len(BILLABLE_DIMENSIONS)
    for row in rows:
        cell = dict(zip(BILLABLE_DIMENSIONS, row[:n], strict=True))
        measures = {"bytes": int(row[n]), "request_count": int(row[n + 1])}
        hits = {
            name: measures[pricing.definition.measure]
            for name, pricing in meters.items()
            if pricing.definition.matches(cell)
        }
        counted = {meters[name].definition.measure for name in hits}
        for by in ("project_id", "artifact_kind"):
            entry = groups.setdefault((by, cell[by]), [{m: 0 for m in meters}, 0, 0])
            for name, raw in hits.items():
                entry[0][name] += raw
            entry[1] += 0 if "bytes" in counted else measures["bytes"]
            entry[2] += 0 if "request_count" in counted else measures["request_count"]
    result = [
        BillableGroup(by, key, {m: meters[m].definition.quantity(raw) for m, raw in q.items()},
                      unbilled_bytes, unbilled_requests)
        for (by, key), (q, unbilled_bytes, unbilled_requests) in sorted(groups.items())
    ]  # fmt: skip
    return BillableUsage(plan, {m: p.definition.unit for m, p in meters.items()}, result)


# -- the money view (re-exported here so one module is the read API) ------------------------


def explain_invoice(warehouse: Warehouse, invoice_id: str, line_id: str | None = None, book=None):
    """Structured explanation of an invoice's lines (`usage_etl.invoicing.explain`)."""
    from usage_etl.invoicing.explain import explain_invoice as explain

    return explain(warehouse, invoice_id, line_id, book)


def account_bill(warehouse: Warehouse, book, account_id: str, period):
    """Cost to date, previous final bill and projection (`usage_etl.invoicing.bill`)."""
    from usage_etl.invoicing.bill import account_bill as bill

    return bill(warehouse, book, account_id, period)
