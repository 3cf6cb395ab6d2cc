"""Reconciliation of node rollups against cache events (contract §2), and rollup completeness.

Everything is aggregated in ClickHouse; Python only receives small result sets (one row per
artifact kind and direction, the top-N worst groups, the nodes with gaps). All values go
through query parameters; only validated identifiers (database, table names) reach the SQL.

A *group* is (day, account_id, project_id, artifact_kind, action): rollups with
direction='egress' and operation='download' against cache `download` events, and
direction='ingress'/operation='upload' against cache `upload` events. Rollups without a project
(project_id '') have no cache-event counterpart and are left out, as are cache events
without a project.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from usage_etl.periods import days_between
from usage_etl.settings import Tolerances
from usage_etl.usage.ledger import IN_PERIOD, current_objects_sql
from usage_etl.warehouse.client import Warehouse

HOURS = 24


class Status(StrEnum):
    """How one group compares: rollups below cache events (error), above (warn), or close."""

    ERROR = "error"  # rollups below cache events beyond tolerance: nodes lost rollups
    WARN = "warn"  # rollups above cache events beyond tolerance: analytics loss / double count
    OK = "ok"


class _RollupsVsCache:
    """Rollup bytes against cache event bytes (the subclasses declare both fields)."""

    rollup_bytes: int
    cache_bytes: int

    @property
    def difference(self) -> int:
        """Rollups minus cache events: negative means rollups are missing."""
        return self.rollup_bytes - self.cache_bytes

    @property
    def ratio(self) -> Decimal | None:
        return ratio(self.rollup_bytes, self.cache_bytes)


@dataclass(frozen=True)
class GroupDiff(_RollupsVsCache):
    """One (account, project, kind, action) group of the day."""

    account_id: str
    project_id: str
    artifact_kind: str
    action: str  # 'download' (egress/download rollups) or 'upload' (ingress/upload rollups)
    rollup_bytes: int
    cache_bytes: int
    status: Status
    # Which nodes' rollups make up rollup_bytes, largest first: where to look for a gap.
    nodes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class KindSummary(_RollupsVsCache):
    """Totals of one (artifact_kind, action) over all groups of the day."""

    artifact_kind: str
    action: str
    rollup_bytes: int
    cache_bytes: int
    groups: int
    error_groups: int
    warn_groups: int


@dataclass(frozen=True)
class Reconciliation:
    day: date
    tolerances: Tolerances
    kinds: list[KindSummary]
    worst: list[GroupDiff]  # ranked: errors first, then warnings, by absolute difference

    @property
    def groups(self) -> int:
        return sum(k.groups for k in self.kinds)

    @property
    def error_groups(self) -> int:
        return sum(k.error_groups for k in self.kinds)

    @property
    def warn_groups(self) -> int:
        return sum(k.warn_groups for k in self.kinds)

    @property
    def rollup_bytes(self) -> int:
        return sum(k.rollup_bytes for k in self.kinds)

    @property
    def cache_bytes(self) -> int:
        return sum(k.cache_bytes for k in self.kinds)

    @property
    def ratio(self) -> Decimal | None:
        return ratio(self.rollup_bytes, self.cache_bytes)

    @property
    def status(self) -> Status:
        if self.error_groups:
            return Status.ERROR
        return Status.WARN if self.warn_groups else Status.OK

    def offenders(self, status: Status) -> list[GroupDiff]:
        return [g for g in self.worst if g.status is status]


def ratio(rollup_bytes: int, cache_bytes: int) -> Decimal | None:
    """rollups / cache events, for display only (None when there are no cache events)."""
    if cache_bytes == 0:
        return None
    return (Decimal(rollup_bytes) / Decimal(cache_bytes)).quantize(Decimal("0.0001"))


# The rollup side of a group: project-bound downloads and uploads of usage_daily, days [first,
# last], one row per usage_daily row (node_id kept for the worst groups' node lists).
_ROLLUPS_SQL = """
    SELECT day, account_id, project_id, toString(artifact_kind) AS artifact_kind,
           if(direction = 'egress', 'download', 'upload') AS action,
           toString(node_id) AS node_id, toUInt128(bytes) AS rollup, toUInt128(0) AS cache
    FROM {usage_daily}
    WHERE day >= {{first:Date}} AND day <= {{last:Date}} AND project_id != ''
      AND ((direction = 'egress' AND operation = 'download')
           OR (direction = 'ingress' AND operation = 'upload'))
"""

# Both sides as one UNION ALL, then GROUP BY: equivalent to a FULL OUTER JOIN on the group key,
# without relying on how the join fills keys of one-sided rows. Sums in UInt128: a report figure
# never wraps, even where several usage_daily groups near 2^64 meet. The days [first, last] at
# once, grouped by day (a range run checks all its days in one statement; a day is a range of one).
# No per-group node map here: a map state per group (sumMap) took a day of 5.6M usage_daily
# rows (50,000 accounts, ~0.9M groups) from 0.37 to 1.2 GiB and ~11 CPU-s; the nodes are summed
# for the top-N worst groups only (_NODES_SQL).
_GROUPS_SQL = """
SELECT day, account_id, project_id, artifact_kind, action,
       sum(rollup) AS rollup_bytes, sum(cache) AS cache_bytes,
       multiIf(
           cache_bytes > rollup_bytes
             AND cache_bytes - rollup_bytes > {{error_abs:UInt64}}
             AND toUInt128(rollup_bytes) * 1000000
                 < toUInt128(cache_bytes) * {{error_keep_ppm:UInt64}}, 'error',
           rollup_bytes > cache_bytes
             AND rollup_bytes - cache_bytes > {{warn_abs:UInt64}}
             AND toUInt128(rollup_bytes) * 1000000
                 > toUInt128(cache_bytes) * {{warn_over_ppm:UInt64}}, 'warn',
           'ok') AS status
FROM (
    {rollups}
    UNION ALL
    SELECT toDate(occurred_at, 'UTC'), account_id, project_id, toString(artifact_kind),
           toString(action), '', toUInt128(0), toUInt128(size_bytes)
    FROM {cache_events}
    WHERE project_id != ''
      AND occurred_at >= {{start:DateTime64(3, 'UTC')}}
      AND occurred_at < {{end:DateTime64(3, 'UTC')}}
)
GROUP BY day, account_id, project_id, artifact_kind, action
"""

# Per day and (artifact_kind, action): the totals, and the kind's `top_n` worst groups as
# candidates (groupArraySorted keeps the smallest keys: errors, then warnings, then ok; larger
# difference first, then account and project). A day's worst groups overall are the best of its
# kinds' candidates (`_rank_worst`): one pass over the groups serves both, where a second
# statement ranking all of them cost a 50,000-account day 1.8-2.7 s of the check's 3-4.3 s
# (docs/performance.md, session 15).
_KINDS_SQL = """
SELECT day, artifact_kind, action, sum(rollup_bytes), sum(cache_bytes), count(),
       countIf(status = 'error'), countIf(status = 'warn'),
       groupArraySorted({{top_n:UInt32}})((
           indexOf(['error', 'warn', 'ok'], status),
           bitNot(greatest(rollup_bytes, cache_bytes) - least(rollup_bytes, cache_bytes)),
           account_id, project_id, rollup_bytes, cache_bytes, status))
FROM ({groups})
GROUP BY day, artifact_kind, action
ORDER BY day, artifact_kind, action
"""

# The rollup bytes of each node in the listed groups (parallel arrays of their keys).
_NODES_SQL = """
SELECT day, account_id, project_id, artifact_kind, action, sumMap([node_id], [rollup])
FROM ({rollups})
WHERE (day, account_id, project_id, artifact_kind, action) IN (
    SELECT g.1, g.2, g.3, g.4, g.5
    FROM (
        SELECT arrayJoin(arrayZip({{days:Array(Date)}}, {{accounts:Array(String)}},
                                  {{projects:Array(String)}}, {{kinds:Array(String)}},
                                  {{actions:Array(String)}})) AS g
    )
)
GROUP BY day, account_id, project_id, artifact_kind, action
"""


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def reconcile(
    warehouse: Warehouse, day: date, tolerances: Tolerances, cache_events_table: str
) -> Reconciliation:
    """Compare the day's project-bound rollups with the day's cache events, group by group."""
    return reconcile_days(warehouse, [day], tolerances, cache_events_table)[day]


def reconcile_days(
    warehouse: Warehouse, days: list[date], tolerances: Tolerances, cache_events_table: str
) -> dict[date, Reconciliation]:
    """`reconcile` of every day from min(days) to max(days), in one statement for them all
    (and a second for the node lists of the worst groups)."""
    first, last = min(days), max(days)
    groups = _GROUPS_SQL.format(
        rollups=_rollups_sql(warehouse), cache_events=warehouse.table(cache_events_table)
    )
    params = {
        "first": first,
        "last": last,
        "start": day_window(first)[0],
        "end": day_window(last)[1],
        **tolerances.parameters(),
    }
    kinds: dict[date, list[KindSummary]] = {}
    candidates: dict[date, list[tuple]] = {}
    for day, kind, action, r, c, n, e, w, worst_of_kind in warehouse.query_rows(
        _KINDS_SQL.format(groups=groups), {**params, "top_n": tolerances.top_n}
    ):
        summary = KindSummary(kind, action, int(r), int(c), int(n), int(e), int(w))
        kinds.setdefault(day, []).append(summary)
        candidates.setdefault(day, []).extend((day, kind, action, *g) for g in worst_of_kind)
    ranked = [
        row for day in sorted(candidates) for row in _rank_worst(candidates[day], tolerances.top_n)
    ]
    nodes = _worst_nodes(warehouse, [r[:5] for r in ranked], params)
    worst: dict[date, list[GroupDiff]] = {}
    for day, account, project, kind, action, r, c, status in ranked:
        diff = GroupDiff(
            account, project, kind, action, int(r), int(c), Status(status),
            nodes.get((day, account, project, kind, action), ()),
        )  # fmt: skip
        worst.setdefault(day, []).append(diff)
    return {
        day: Reconciliation(day, tolerances, kinds.get(day, []), worst.get(day, []))
        for day in days_between(first, last)
    }


def _rank_worst(candidates: list[tuple], top_n: int) -> list[tuple]:
    """A day's `top_n` worst groups among its kinds' candidates (`_KINDS_SQL`: day, kind,
    action, status rank, inverted difference, account, project, rollup, cache, status), as
    (day, account, project, kind, action, rollup, cache, status): errors first, then warnings,
    larger difference first, then by account, project, kind and action. Python's str order is
    ClickHouse's byte order for UTF-8."""
    ranked = sorted(candidates, key=lambda g: (*g[3:7], g[1], g[2]))[:top_n]
    return [
        (day, account, project, kind, action, rollup, cache, status)
        for day, kind, action, _, _, account, project, rollup, cache, status in ranked
    ]


def _rollups_sql(warehouse: Warehouse) -> str:
    return _ROLLUPS_SQL.format(usage_daily=warehouse.table("usage_daily"))


def _worst_nodes(
    warehouse: Warehouse, keys: list[tuple], params: dict
) -> dict[tuple, tuple[tuple[str, int], ...]]:
    """Per group key (day, account, project, kind, action) of `keys`, its nodes' rollup bytes,
    largest first (groups with no rollups have none)."""
    if not keys:
        return {}
    days, accounts, projects, kinds, actions = (list(column) for column in zip(*keys, strict=True))
    rows = warehouse.query_rows(
        _NODES_SQL.format(rollups=_rollups_sql(warehouse)),
        {
            "first": params["first"], "last": params["last"], "days": days,
            "accounts": accounts, "projects": projects, "kinds": kinds, "actions": actions,
        },
    )  # fmt: skip
    return {tuple(r[:5]): _by_bytes(*r[5]) for r in rows}


def _by_bytes(nodes: list[str], sizes: list[int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(zip(nodes, map(int, sizes), strict=True), key=lambda n: (-n[1], n[0])))


# -- node-hour coverage (the completeness check) ---------------------------------------------


@dataclass(frozen=True)
class NodeGap:
    """A node that reported during the day but has hours without a loaded rollup object."""

    node_id: str
    missing_hours: list[int]
    quarantined_hours: list[int]  # of the missing hours, those whose objects were quarantined


@dataclass(frozen=True)
class NodeHourCoverage:
    day: date
    nodes: int  # nodes with at least one loaded or quarantined object for the day
    objects_loaded: int
    objects_quarantined: int
    objects_ignored: int
    newest_last_modified: datetime | None
    gap_nodes: int  # nodes with at least one missing hour (gaps lists at most max_nodes)
    missing_node_hours: int
    gaps: list[NodeGap]

    @property
    def newest_after_day_end(self) -> timedelta | None:
        """How long after the day ended the newest object landed (negative: before the end)."""
        if self.newest_last_modified is None:
            return None
        return self.newest_last_modified - day_window(self.day)[1]


# Every day of [start, end) at once, grouped by day (ledger.IN_PERIOD); a day is a range of one.
_LEDGER_SUMMARY_SQL = """
SELECT day, countIf(status = 'loaded'), countIf(status = 'quarantined'),
       countIf(status = 'ignored'), countIf(status != 'ignored'),
       maxIf(last_modified, status != 'ignored'),
       uniqExactIf(node_id, status != 'ignored' AND node_id != '')
FROM ({current})
GROUP BY day
"""

_NODE_GAPS_SQL = """
SELECT day, node_id, missing, arrayFilter(h -> has(quarantined, h), missing),
       count() OVER (PARTITION BY day) AS gap_nodes,
       sum(length(missing)) OVER (PARTITION BY day) AS missing_node_hours
FROM (
    SELECT day, node_id,
           arrayFilter(h -> NOT has(loaded, h), range(toUInt8({{hours:UInt8}}))) AS missing,
           quarantined
    FROM (
        SELECT day, node_id,
               groupUniqArrayIf(hour, delivered) AS loaded,
               groupUniqArrayIf(hour, status = 'quarantined') AS quarantined
        FROM ({current})
        WHERE status != 'ignored' AND node_id != ''
        GROUP BY day, node_id
    )
)
WHERE length(missing) > 0
ORDER BY day, length(missing) DESC, node_id
LIMIT {{limit:UInt32}} BY day
"""


def node_hour_coverage(warehouse: Warehouse, day: date, max_nodes: int = 50) -> NodeHourCoverage:
    """Which node-hours of the day have no loaded object, for nodes that reported that day."""
    return node_hour_coverages(warehouse, [day], max_nodes)[day]


def node_hour_coverages(
    warehouse: Warehouse, days: list[date], max_nodes: int = 50
) -> dict[date, NodeHourCoverage]:
    """`node_hour_coverage` of every day from min(days) to max(days), in two statements."""
    first, last = min(days), max(days)
    # The current state of each object, from its ledger (ledger.current_objects_sql).
    current = current_objects_sql(warehouse, where=IN_PERIOD)
    params = {"start": first, "end": last + timedelta(days=1)}
    summaries = {
        row[0]: row[1:]
        for row in warehouse.query_rows(_LEDGER_SUMMARY_SQL.format(current=current), params)
    }
    gap_rows: dict[date, list] = {}
    for row in warehouse.query_rows(
        _NODE_GAPS_SQL.format(current=current), {**params, "hours": HOURS, "limit": max_nodes}
    ):
        gap_rows.setdefault(row[0], []).append(row[1:])
    coverages = {}
    for day in days_between(first, last):
        loaded, quarantined, ignored, seen, newest, nodes = summaries.get(day, (0,) * 6)
        rows = gap_rows.get(day, [])
        gaps = [
            NodeGap(node, sorted(int(h) for h in missing), sorted(int(h) for h in in_quarantine))
            for node, missing, in_quarantine, _, _ in rows
        ]
        coverages[day] = NodeHourCoverage(
            day=day,
            nodes=int(nodes),
            objects_loaded=int(loaded),
            objects_quarantined=int(quarantined),
            objects_ignored=int(ignored),
            newest_last_modified=_utc(newest) if seen else None,
            gap_nodes=int(rows[0][3]) if rows else 0,
            missing_node_hours=int(rows[0][4]) if rows else 0,
            gaps=gaps,
        )
    return coverages


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
