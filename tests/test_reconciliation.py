"""Reconciliation checks against real chDB: synthetic days built from one list of cache events.

Rollups (usage_daily) are aggregated from the same traffic the cache events describe, so a clean
day matches exactly; each scenario then removes traffic from one side only.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from usage_etl.defs.reconciliation.checks import node_hours_complete, rollups_cover_cache_events
from usage_etl.defs.resources import ClickHouseResource
from usage_etl.defs.vocabulary import daily_partitions
from usage_etl.reconciliation.compare import (
    Status,
    Tolerances,
    node_hour_coverage,
    reconcile,
    reconcile_days,
)
from usage_etl.settings import MIB

DAY = date(2026, 10, 5)
DAY_START = datetime(2026, 10, 5, tzinfo=UTC)
NODES = {"edge-fra-1": "eu-central", "edge-iad-1": "us-east", "edge-sin-1": "ap-southeast"}
# (account, project, kind, smallest event, largest event)
PROJECTS = [
    ("acme", "ios-app", "xcode", 1 * MIB, 16 * MIB),
    ("acme", "android", "gradle", 256 * 1024, 4 * MIB),
    ("globex", "monorepo", "nx", 512 * 1024, 8 * MIB),
    ("initech", "tiny", "metro", 1024, 16 * 1024),  # small and noisy: must never page anyone
]
EVENTS_PER_NODE_HOUR = 4
DIRECTION = {"download": ("egress", "download"), "upload": ("ingress", "upload")}


@dataclass(frozen=True)
class Event:
    event_id: str
    occurred_at: datetime
    account_id: str
    project_id: str
    artifact_kind: str
    action: str
    size_bytes: int
    node_id: str


def traffic(seed: int = 7) -> list[Event]:
    """One day of project traffic, every node serving every project every hour."""
    rng = random.Random(seed)
    events = []
    for account, project, kind, low, high in PROJECTS:
        for action in ("download", "upload"):
            for node in NODES:
                for hour in range(24):
                    for i in range(EVENTS_PER_NODE_HOUR):
                        at = DAY_START + timedelta(hours=hour, seconds=rng.randrange(3600))
                        event_id = f"{node}-{project}-{action}-{hour}-{i}"
                        size = rng.randint(low, high)
                        events.append(
                            Event(event_id, at, account, project, kind, action, size, node)
                        )
    return events


def insert_cache_events(warehouse, events: list[Event]) -> None:
    warehouse.insert_rows(
        "cache_events",
        [
            (
                e.event_id,
                e.occurred_at,
                e.account_id,
                e.project_id,
                e.artifact_kind,
                e.action,
                e.size_bytes,
            )
            for e in events
        ],
        [
            "event_id",
            "occurred_at",
            "account_id",
            "project_id",
            "artifact_kind",
            "action",
            "size_bytes",
        ],
    )


def insert_usage_daily(warehouse, events: list[Event], day: date = DAY) -> None:
    """What the nodes' rollups add up to in usage_daily (contract §4 rows)."""
    sums: dict[tuple, list[int]] = {}
    for e in events:
        direction, operation = DIRECTION[e.action]
        key = (
            e.account_id,
            e.project_id,
            NODES[e.node_id],
            e.node_id,
            direction,
            operation,
            e.artifact_kind,
            "public_internet",
        )
        acc = sums.setdefault(key, [0, 0])
        acc[0] += e.size_bytes
        acc[1] += 1
    rows = [(day, *key, b, n) for key, (b, n) in sums.items()]
    # Traffic that has no cache-event counterpart and must not be compared.
    rows += [
        (
            day,
            "acme",
            "",
            "eu-central",
            "edge-fra-1",
            "egress",
            "download",
            "script",
            "public_internet",
            900 * MIB,
            10,
        ),
        (
            day,
            "acme",
            "ios-app",
            "eu-central",
            "edge-fra-1",
            "egress",
            "exists",
            "xcode",
            "public_internet",
            700 * MIB,
            10,
        ),
    ]
    warehouse.insert_rows(
        "usage_daily",
        rows,
        [
            "day",
            "account_id",
            "project_id",
            "region",
            "node_id",
            "direction",
            "operation",
            "artifact_kind",
            "network_path",
            "bytes",
            "request_count",
        ],
    )


def insert_neighbour_days(warehouse) -> None:
    """Big traffic just outside the day, or without a project, on one side only: a leak in the
    day or project filter would fail the clean day."""
    next_day = DAY_START + timedelta(days=1)
    before = Event(
        "prev",
        DAY_START - timedelta(milliseconds=1),
        "acme",
        "ios-app",
        "xcode",
        "download",
        500 * MIB,
        "edge-fra-1",
    )
    unbound = replace(before, event_id="unbound", occurred_at=DAY_START, project_id="")
    insert_cache_events(
        warehouse, [before, replace(before, event_id="next", occurred_at=next_day), unbound]
    )
    insert_usage_daily(warehouse, [before], day=DAY + timedelta(days=1))


def insert_ledger(warehouse, silent: set[tuple[str, int]] = frozenset()) -> None:
    """One loaded object per node and hour, except the silent node-hours."""
    rows = []
    for node in NODES:
        for hour in range(24):
            if (node, hour) in silent:
                continue
            key = f"rollups/date={DAY}/hour={hour:02d}/node={node}/part-0.parquet"
            landed = DAY_START + timedelta(hours=hour + 1, minutes=5)
            rows.append(ledger_row(key, node, hour, "loaded", landed))
    warehouse.insert_rows("ingest_objects", rows, LEDGER_COLUMNS)


LEDGER_COLUMNS = [
    "day",
    "object_key",
    "etag",
    "size",
    "last_modified",
    "node_id",
    "hour",
    "format",
    "status",
    "reason",
    "rows_read",
    "rows_loaded",
    "rows_quarantined",
    "run_id",
    "recorded_at",
]


def ledger_row(key, node, hour, status, landed, recorded_at=None):
    recorded_at = recorded_at or landed + timedelta(minutes=1)
    return (
        DAY,
        key,
        "etag",
        1000,
        landed,
        node,
        hour,
        "parquet",
        status,
        "",
        10,
        10,
        0,
        "run-1",
        recorded_at,
    )


def load_day(warehouse, rollup_events, cache_events, silent=frozenset()) -> None:
    insert_usage_daily(warehouse, rollup_events)
    insert_cache_events(warehouse, cache_events)
    insert_neighbour_days(warehouse)
    insert_ledger(warehouse, silent)


@dg.asset(key="usage_daily", partitions_def=daily_partitions, group_name="usage")
def usage_daily_stand_in() -> dg.MaterializeResult:
    """Stands in for the real ingestion asset: the data is already in ClickHouse."""
    return dg.MaterializeResult()


def run_checks(
    partition: str = DAY.isoformat(), run_config: dict | None = None
) -> dict[str, dg.AssetCheckEvaluation]:
    result = dg.materialize(
        [usage_daily_stand_in, rollups_cover_cache_events, node_hours_complete],
        partition_key=partition,
        resources={"clickhouse": ClickHouseResource()},
        run_config=run_config,
    )
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def group_count() -> int:
    return len(PROJECTS) * len(DIRECTION)


# -- scenarios -----------------------------------------------------------------------------------


def test_clean_day_passes_every_check(warehouse):
    events = traffic()
    load_day(warehouse, events, events)

    evaluations = run_checks()

    rec, comp = evaluations["rollups_cover_cache_events"], evaluations["node_hours_complete"]
    assert rec.passed, rec.description
    assert comp.passed, comp.description
    assert rec.partition == comp.partition == DAY.isoformat()
    assert rec.metadata["groups_checked"].value == group_count()
    assert rec.metadata["groups_error"].value == 0
    total = sum(e.size_bytes for e in events)
    assert rec.metadata["rollup_bytes"].value == rec.metadata["cache_bytes"].value == total
    kinds_md = rec.metadata["by_artifact_kind"].value
    for _, _, kind, _, _ in PROJECTS:
        assert f"| {kind} | egress/download |" in kinds_md
    assert comp.metadata["nodes_reporting"].value == len(NODES)
    assert comp.metadata["missing_node_hours"].value == 0


def test_node_under_reporting_one_projects_downloads_fails_with_error(warehouse):
    events = traffic()
    lost = [
        e
        for e in events
        if (e.node_id, e.project_id, e.action) == ("edge-iad-1", "monorepo", "download")
    ]
    lost_ids = {e.event_id for e in lost}
    load_day(warehouse, [e for e in events if e.event_id not in lost_ids], events)

    rec = run_checks()["rollups_cover_cache_events"]

    assert not rec.passed
    assert rec.severity == dg.AssetCheckSeverity.ERROR
    assert rec.metadata["groups_error"].value == 1
    assert "account globex project monorepo" in rec.description
    assert "BELOW" in rec.description
    first_row = rec.metadata["worst_groups"].value.splitlines()[2]
    lost_bytes = sum(e.size_bytes for e in lost)
    assert first_row.startswith("| 1 | ERROR | globex | monorepo | nx | egress/download |")
    assert f"{-lost_bytes:+,}" in first_row
    node_column = first_row.split("|")[-2]  # where to look: the silent node is not among them
    assert "edge-fra-1" in node_column and "edge-sin-1" in node_column
    assert "edge-iad-1" not in node_column


def test_one_percent_dropped_cache_events_passes(warehouse):
    events = traffic()
    dropped = set(random.Random(1).sample(range(len(events)), len(events) // 100))
    load_day(warehouse, events, [e for i, e in enumerate(events) if i not in dropped])

    result = reconcile(warehouse, DAY, Tolerances(), "cache_events")

    assert result.status is Status.OK
    assert result.rollup_bytes > result.cache_bytes  # the drop is visible, just tolerated
    assert result.ratio is not None and 1 < result.ratio < 1 + Tolerances().warn_relative


def test_tolerances_can_be_tightened_per_run(warehouse):
    events = traffic()
    dropped = set(random.Random(1).sample(range(len(events)), len(events) // 100))
    load_day(warehouse, events, [e for i, e in enumerate(events) if i not in dropped])
    strict = {"warn_relative": "0.001", "warn_absolute_bytes": 0}

    rec = run_checks(
        run_config={"ops": {"usage_daily_rollups_cover_cache_events": {"config": strict}}}
    )["rollups_cover_cache_events"]

    assert not rec.passed
    assert rec.severity == dg.AssetCheckSeverity.WARN
    assert rec.metadata["groups_error"].value == 0
    assert rec.metadata["groups_warn"].value > 0


def test_heavy_analytics_loss_warns_but_small_projects_stay_quiet(warehouse):
    events = traffic()
    dropped = {e.event_id for i, e in enumerate(events) if i % 5 == 0}  # 20% of every group
    load_day(warehouse, events, [e for e in events if e.event_id not in dropped])

    result = reconcile(warehouse, DAY, Tolerances(), "cache_events")

    assert result.status is Status.WARN
    flagged = {(g.project_id, g.action) for g in result.offenders(Status.WARN)}
    big = {(p, a) for _, p, _, _, high in PROJECTS if high >= MIB for a in DIRECTION}
    assert flagged == big  # tiny's 20% is a few KiB, below the absolute tolerance


def test_small_noisy_project_only_errors_beyond_the_absolute_tolerance(warehouse):
    events = [e for e in traffic() if (e.project_id, e.action) == ("tiny", "download")]
    half = [e for i, e in enumerate(events) if i % 2]
    load_day(warehouse, half, events)
    missing = sum(e.size_bytes for e in events) - sum(e.size_bytes for e in half)

    quiet = reconcile(warehouse, DAY, Tolerances(error_absolute_bytes=missing), "cache_events")
    loud = reconcile(warehouse, DAY, Tolerances(error_absolute_bytes=missing - 1), "cache_events")

    assert quiet.status is Status.OK
    assert loud.status is Status.ERROR
    assert {g.project_id for g in loud.offenders(Status.ERROR)} == {"tiny"}


def test_silent_node_hour_is_reported(warehouse):
    events = traffic()
    load_day(warehouse, events, events, silent={("edge-sin-1", 7), ("edge-sin-1", 8)})
    # A quarantined file is the current state of hour 3 on fra; hour 4 was quarantined first and
    # then re-delivered and loaded, so only its newest ledger row counts.
    fra = "edge-fra-1"
    key3 = f"rollups/date={DAY}/hour=03/node={fra}/part-0.parquet"
    key4 = f"rollups/date={DAY}/hour=04/node={fra}/part-0.parquet"
    late = DAY_START + timedelta(days=1, hours=2)
    warehouse.insert_rows(
        "ingest_objects",
        [
            ledger_row(key3, fra, 3, "quarantined", late, late + timedelta(hours=2)),
            ledger_row(key4, fra, 4, "quarantined", DAY_START, DAY_START + timedelta(hours=1)),
        ],
        LEDGER_COLUMNS,
    )

    evaluation = run_checks()["node_hours_complete"]
    comp = node_hour_coverage(warehouse, DAY)

    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "edge-sin-1 hours 07, 08" in evaluation.description
    assert {(g.node_id, tuple(g.missing_hours), tuple(g.quarantined_hours)) for g in comp.gaps} == {
        ("edge-sin-1", (7, 8), ()),
        (fra, (3,), (3,)),
    }
    assert comp.missing_node_hours == 3
    assert comp.newest_last_modified == late
    assert evaluation.metadata["newest_object_seconds_after_day_end"].value == 2 * 3600


def test_worst_groups_list_the_nodes_of_their_own_day(warehouse):
    """The node lists are summed for the worst groups only, by a statement of their own: in a
    range, each group's list is its own day's usage_daily rows summed per node, largest first,
    never another day's rows of the same (account, project, kind, action)."""
    events = traffic()
    second = DAY + timedelta(days=1)
    fra_and_sin = [e for e in events if e.node_id != "edge-iad-1"]
    insert_usage_daily(warehouse, events)
    insert_usage_daily(warehouse, fra_and_sin, second)

    recs = reconcile_days(warehouse, [DAY, second], Tolerances(top_n=100), "cache_events")

    for day, served in ((DAY, events), (second, fra_and_sin)):
        expected: dict[tuple, dict[str, int]] = {}
        for e in served:
            nodes = expected.setdefault((e.account_id, e.project_id, e.artifact_kind, e.action), {})
            nodes[e.node_id] = nodes.get(e.node_id, 0) + e.size_bytes
        worst = recs[day].worst
        assert len(worst) == len(expected) == group_count()
        for g in worst:
            nodes = expected[(g.account_id, g.project_id, g.artifact_kind, g.action)]
            assert g.nodes == tuple(sorted(nodes.items(), key=lambda n: (-n[1], n[0])))
            assert g.rollup_bytes == sum(nodes.values())


def test_day_without_objects_or_traffic_is_reported_not_crashed(warehouse):
    evaluations = run_checks()

    assert evaluations["rollups_cover_cache_events"].passed
    assert not evaluations["node_hours_complete"].passed
    assert "no rollup objects" in evaluations["node_hours_complete"].description
    assert "newest_object_seconds_after_day_end" not in evaluations["node_hours_complete"].metadata


# -- configuration -------------------------------------------------------------------------------


def test_tolerances_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("USAGE_ETL_RECONCILIATION_WARN_RELATIVE", "0.1")
    monkeypatch.setenv("USAGE_ETL_RECONCILIATION_ERROR_ABSOLUTE_BYTES", "42")
    tolerances = Tolerances()
    assert tolerances.parameters() == {
        "error_keep_ppm": 995_000,
        "error_abs": 42,
        "warn_over_ppm": 1_100_000,
        "warn_abs": 64 * MIB,
    }


@pytest.mark.parametrize("value", ["-0.01", "1", "0.0000001"])
def test_tolerances_reject_values_that_cannot_be_compared_exactly(value):
    with pytest.raises(ValueError):
        Tolerances(error_relative=value)


def test_checks_run_in_the_daily_usage_job():
    from usage_etl.definitions import defs

    job = defs().resolve_job_def("daily_usage")
    names = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {"rollups_cover_cache_events", "node_hours_complete"} <= names


@pytest.mark.parametrize("top_n", [1, 7, 1000])
def test_worst_groups_are_ranked_across_kinds_as_one_list_per_day(warehouse, top_n):
    """A day's worst groups come from every kind and action at once: errors, then warnings,
    larger difference first, ties by account, project, kind and action; each day its own
    list. Differences repeat on purpose, so the tie order decides."""
    rng = random.Random(top_n)
    second = DAY + timedelta(days=1)
    rank = {Status.ERROR: 0, Status.WARN: 1, Status.OK: 2}
    expected: dict[date, list[tuple]] = {DAY: [], second: []}
    daily, cache = [], []
    groups = itertools.product(
        (DAY, second), ("a1", "a2", "b1"), ("p1", "p2"), ("xcode", "gradle", "nx"), DIRECTION
    )
    for day, account, project, kind, action in groups:
        base = rng.choice((256, 512)) * MIB
        difference = rng.choice((100, 200)) * MIB  # beyond both tolerances
        status = rng.choice(list(Status))
        rollup = base + difference if status is Status.WARN else base
        cached = base + difference if status is Status.ERROR else base
        direction, operation = DIRECTION[action]
        place = ("eu-central", "edge-fra-1", direction, operation, kind, "public_internet")
        daily.append((day, account, project, *place, rollup, 1))
        at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        event_id = f"{day}-{account}-{project}-{kind}-{action}"
        cache.append((event_id, at, account, project, kind, action, cached))
        gap = difference if status is not Status.OK else 0
        key = (rank[status], -gap, account, project, kind, action)
        expected[day].append((key, (account, project, kind, action, status)))
    daily_columns = ["day", "account_id", "project_id", "region", "node_id", "direction"]
    daily_columns += ["operation", "artifact_kind", "network_path", "bytes", "request_count"]
    warehouse.insert_rows("usage_daily", daily, daily_columns)
    cache_columns = ["event_id", "occurred_at", "account_id", "project_id", "artifact_kind"]
    warehouse.insert_rows("cache_events", cache, [*cache_columns, "action", "size_bytes"])

    recs = reconcile_days(warehouse, [DAY, second], Tolerances(top_n=top_n), "cache_events")

    for day in (DAY, second):
        worst = [
            (g.account_id, g.project_id, g.artifact_kind, g.action, g.status)
            for g in recs[day].worst
        ]
        assert worst == [group for _, group in sorted(expected[day])[:top_n]]
