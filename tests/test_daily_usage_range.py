"""A range of days in one daily_usage run (what a backfill launches, BackfillPolicy.single_run):
day by day, each day published and checked on its own, a failing day named and alone."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import dagster as dg
import pytest
from rollup_files import Landing, ndjson_gz_bytes, parquet_bytes, rollup, usage_rows

from usage_etl.crash_points import on_fault
from usage_etl.warehouse.client import WarehouseError

FIRST = date(2026, 10, 4)
DAYS = [FIRST + timedelta(days=i) for i in range(3)]
DIMS = ("proj-1", "node-a", "egress", "download", "xcode", "public_internet")


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


def run_range(first: date, last: date) -> dg.ExecuteInProcessResult:
    from usage_etl.definitions import defs

    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    return defs().resolve_job_def("daily_usage").execute_in_process(
        tags=tags, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )  # fmt: skip


def _deliver(landing: Landing, day: date, scale: int) -> None:
    """e1 corrected by a later version, e2 delivered twice: usage (scale + 500, 10) + (10, 1)."""
    e2 = rollup(f"{day}-e2", day=day, account_id="acct-2", bytes=10, request_count=1)
    landing.put(
        "a.parquet", parquet_bytes([rollup(f"{day}-e1", day=day, bytes=scale), e2]), day=day
    )
    corrected = rollup(f"{day}-e1", day=day, bytes=scale + 500, emitted_minute=30)
    landing.put("b.ndjson.gz", ndjson_gz_bytes([corrected, e2]), day=day)


def _expected(scale: int) -> list[tuple]:
    return [("acct-1", *DIMS, scale + 500, 10), ("acct-2", *DIMS, 10, 1)]


def _materialized(result, node: str, asset: str) -> list[str]:
    return sorted(
        m.partition
        for m in result.asset_materializations_for_node(node)
        if m.asset_key.to_user_string() == asset
    )


def _evaluations(result) -> dict[tuple[str, str], bool]:
    return {(e.check_name, e.partition): e.passed for e in result.get_asset_check_evaluations()}


def _failure_message(result) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure
    )


def test_a_range_publishes_each_day_exactly_and_checks_each_day(landing, warehouse):
    for i, day in enumerate(DAYS):
        _deliver(landing, day, scale=1000 * (i + 1))
    # The middle day also has an unreadable object: quarantined whole, its good files load.
    landing.put("broken.parquet", b"PAR1 not really", day=DAYS[1], hour=7)

    result = run_range(DAYS[0], DAYS[-1])

    assert result.success, _failure_message(result)
    for i, day in enumerate(DAYS):
        assert usage_rows(warehouse, day.isoformat()) == _expected(1000 * (i + 1)), day
    keys = [d.isoformat() for d in DAYS]
    assert _materialized(result, "rollup_rows", "rollup_rows") == keys
    assert _materialized(result, "published_usage", "usage_daily") == keys
    daily = {
        m.partition: m.metadata
        for m in result.asset_materializations_for_node("published_usage")
        if m.asset_key.to_user_string() == "usage_daily"
    }
    # Each day's materialization carries that day's own figures.
    assert [daily[k]["day"].value for k in keys] == keys
    assert [daily[k]["bytes"].value for k in keys] == [1000 * (i + 1) + 510 for i in range(3)]
    assert [daily[k]["duplicates_removed"].value for k in keys] == [2, 2, 2]
    checks = _evaluations(result)
    assert {checks[("usage_daily_is_exact", k)] for k in keys} == {True}
    assert {k: checks[("quarantine_report", k)] for k in keys} == {
        keys[0]: True, keys[1]: False, keys[2]: True
    }  # fmt: skip
    # Every check of the job (the reconciliation ones too) has one result per day.
    assert {(name, k) for (name, k) in checks} == {(n, k) for n, _ in checks for k in keys}
    assert len({name for name, _ in checks}) == 5


@pytest.mark.parametrize("parallel_days", [1, 2])
def test_a_failing_day_is_named_and_every_other_day_is_published(
    landing, warehouse, monkeypatch, parallel_days
):
    from usage_etl.defs.usage import days as range_days

    monkeypatch.setattr(range_days, "PARALLEL_DAYS", parallel_days)
    for i, day in enumerate(DAYS):
        _deliver(landing, day, scale=1000 * (i + 1))

    # The warehouse refuses the first swap the range makes: one day after another, the first
    # day's; two days at once, the first of the first two to get there.
    with on_fault("publish.before_swap", _refuse_swap):
        result = run_range(DAYS[0], DAYS[-1])

    assert not result.success
    message = _failure_message(result)
    (bad,) = [d for d in DAYS if f"publishing failed for 1 of 3 days: {d}" in message]
    assert bad == DAYS[0] if parallel_days == 1 else bad in DAYS[:2]
    assert f"publishing {bad} (nothing was published)" in message
    # Every other day is published exactly; the failing one has nothing.
    for i, day in enumerate(DAYS):
        expected = [] if day == bad else _expected(1000 * (i + 1))
        assert usage_rows(warehouse, day.isoformat()) == expected, day
    good = [d.isoformat() for d in DAYS if d != bad]
    assert _materialized(result, "published_usage", "usage_daily") == good
    assert _materialized(result, "published_usage", "usage_hourly") == good
    # The usage_daily check steps did not run (their upstream failed); the published days
    # were still checked, once each. rollup_rows' own check ran for every day.
    checks = _evaluations(result)
    on_daily = {"usage_daily_is_exact", "conflict_report"}
    daily_checks = {(n, k) for (n, k) in checks if n in on_daily}
    assert daily_checks == {(n, k) for n in on_daily for k in good}
    assert all(checks[("usage_daily_is_exact", k)] for k in good)
    assert {k for (n, k) in checks if n == "quarantine_report"} == {d.isoformat() for d in DAYS}
    retried = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retried == []  # a permanent error is not retried


def test_days_side_by_side_end_in_order_and_a_large_day_runs_alone(warehouse, monkeypatch):
    """days.each_day: two small days in flight at once, each on a connection of its own; a
    large day with no other in flight, on the run's connection; a day's error is its outcome
    and the days after it still run; every outcome reported in day order; connections closed."""
    from usage_etl.defs.usage import days as range_days
    from usage_etl.usage import publish
    from usage_etl.warehouse.client import Warehouse

    days = [FIRST + timedelta(days=i) for i in range(5)]
    large = days[3]
    monkeypatch.setattr(range_days, "PARALLEL_DAYS", 2)
    monkeypatch.setattr(publish, "SMALL_DAY_ROWS", 2)
    for day, rows in ((days[0], 1), (large, 3)):
        warehouse.command(
            f"INSERT INTO {warehouse.table('rollup_rows')} (day, event_id) "
            "SELECT {day:Date}, toString(number) FROM numbers({rows:UInt32})",
            {"day": day, "rows": rows},
        )
    closed: list[Warehouse] = []
    close = Warehouse.close
    monkeypatch.setattr(Warehouse, "close", lambda self: (closed.append(self), close(self)))

    lock = threading.Lock()
    in_flight: set[date] = set()
    beside: dict[date, set[date]] = {}
    connection: dict[date, Warehouse] = {}
    # The first two days meet here: neither goes on until both are in flight.
    both_small_days = threading.Barrier(2, timeout=30)

    def work(own: Warehouse, day: date) -> str:
        with lock:
            in_flight.add(day)
            connection[day] = own
        try:
            if day in days[:2]:
                both_small_days.wait()
            with lock:
                beside[day] = set(in_flight)
            if day == days[2]:
                raise ValueError(f"{day} broke")
            return own.query_one("SELECT toString({d:Date})", {"d": day})
        finally:
            with lock:
                in_flight.discard(day)

    reported: list[date] = []
    outcomes = range_days.each_day(warehouse, days, work, lambda day, outcome: reported.append(day))

    assert reported == days
    assert list(outcomes) == days
    assert [outcomes[d] for d in days if d != days[2]] == [
        d.isoformat() for d in days if d != days[2]
    ]
    assert isinstance(outcomes[days[2]], ValueError)
    assert beside[days[0]] == beside[days[1]] == {days[0], days[1]}
    assert beside[large] == {large}
    assert connection[large] is warehouse
    siblings = {id(connection[d]) for d in days if d != large}
    assert id(warehouse) not in siblings
    assert siblings == {id(w) for w in closed}  # every sibling closed, the run's own kept open
    assert warehouse.query_one("SELECT 1") == 1


def _refuse_swap() -> None:
    raise WarehouseError("injected: the table's disk is read-only", transient=False)


def test_backfill_policy_is_one_run_unless_days_per_run_is_set():
    from usage_etl.defs.usage.days import backfill_policy

    assert backfill_policy(None) == dg.BackfillPolicy.single_run()
    assert backfill_policy("7") == dg.BackfillPolicy.multi_run(max_partitions_per_run=7)
    with pytest.raises(ValueError, match="must be >= 1"):
        backfill_policy("0")
