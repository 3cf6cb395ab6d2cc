"""What the checks of a range run (a backfill's single run) cost per day.

    .venv/bin/python -m bench.range_checks [--days 10] [--rows 2000]
        [--instance ephemeral|sqlite|postgres] [--profile FILE] [--skip-audits]

Starts SeaweedFS, simulates the demo fleet (8 nodes, 40 accounts, the demo's faults) for
`--days` days, runs daily_usage over the range in process (what a backfill launches with
BackfillPolicy.single_run), and prints each step's wall time from the run's event log, the
check steps' total and their cost per day, and the CPU seconds of the whole run. Then, on the
same warehouse in the same process, times each check's audit both ways, alternating `--rounds`
times: day by day (the one-day functions, what a range run did before session 9) and the whole
range at once (what it does now), wall and CPU seconds (chDB runs in this process).

Then it re-publishes every day `--rounds` times (`publish_day`, what a range run pays per day
after its ingest) and prints the best round's wall and CPU seconds per day, how many statements
one publish sends, and whether usage_hourly and usage_daily are unchanged by it.

`--instance` picks the Dagster instance the run writes its events to: `ephemeral` (in memory,
the default), `sqlite` (dagster_home/dagster.yaml: the dev instance's kept-open SQLite event
log) or `postgres` (dagster_home/dagster.postgres.yaml, the production instance file, against a
PostgreSQL this bench starts: what a backfill's run worker pays per event). `--profile FILE`
writes a cProfile of the run alone (pstats format); `--skip-audits` stops after the run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import resource
import shutil
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

from bench.demo_fleet import land_demo_days
from usage_etl.local_stack import start_postgres, start_seaweed

BUCKET = "landing"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=date.fromisoformat, default=date(2026, 10, 1))
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the engine (path printed)")
    parser.add_argument(
        "--instance", choices=("ephemeral", "sqlite", "postgres"), default="ephemeral"
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    parser.add_argument("--skip-audits", action="store_true", help="stop after the run")
    args = parser.parse_args()
    days = [args.first + timedelta(days=i) for i in range(args.days)]
    work = Path(tempfile.mkdtemp(prefix="bench-range-checks-"))
    s3 = start_seaweed(work / "seaweedfs")
    stack = contextlib.ExitStack()
    try:
        land_demo_days(s3, work, BUCKET, "range/rollups", days, args.rows)

        import dagster as dg

        from usage_etl.definitions import defs

        job = defs().resolve_job_def("daily_usage")
        tags = {
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        }
        instance = stack.enter_context(open_instance(args.instance, work, stack))
        profile = cProfile.Profile() if args.profile else None
        cpu, started = _cpu(), time.time()
        if profile:
            profile.enable()
        result = job.execute_in_process(tags=tags, instance=instance, raise_on_error=False)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        wall, cpu = time.time() - started, _cpu() - cpu
        records = instance.all_logs(result.run_id)
        stack.close()
        if not args.skip_audits:
            audits = time_audits(days, args.rounds)
            publishes = time_publishes(days, args.rounds)
    finally:
        stack.close()
        s3.stop()
        if args.keep:
            print(f"kept: chdb://{work / 'engine'} (database usage)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    starts, ends = {}, {}
    for r in records:
        if not r.is_dagster_event:
            continue
        if r.dagster_event_type == dg.DagsterEventType.STEP_START:
            starts[r.step_key] = r.timestamp
        elif r.dagster_event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            ends[r.step_key] = r.timestamp
    evaluations = result.get_asset_check_evaluations()
    print(f"{len(days)} days x {args.rows} rows: run success={result.success}")
    checks = 0.0
    for step in sorted(starts, key=starts.get):
        seconds = ends.get(step, starts[step]) - starts[step]
        is_check = step not in ("rollup_rows", "published_usage")
        checks += seconds if is_check else 0.0
        print(f"  step {step:<50} {seconds:7.2f} s")
    print(f"check steps: {checks:.2f} s, {checks / len(days):.3f} s per day")
    print(f"check evaluations: {len(evaluations)} ({len(evaluations) / len(days):.0f} per day)")
    kinds = Counter(
        r.dagster_event_type.value if r.is_dagster_event else "log message" for r in records
    )
    print(
        f"events written: {len(records)} ({', '.join(f'{k} {n}' for k, n in kinds.most_common())})"
    )
    print(
        f"whole run in process ({args.instance} instance): wall {wall:.2f} s, CPU {cpu:.2f} s; "
        f"per day {wall / len(days):.3f} s, {cpu / len(days):.3f} CPU-s"
    )
    if args.skip_audits:
        return
    print(f"\nthe audits of {len(days)} days (best of {args.rounds}; wall s / CPU s):")
    print(f"  {'check':<28} {'day by day':>16} {'range at once':>16}")
    for name, (by_day, at_once) in audits.items():
        print(
            f"  {name:<28} {by_day[0]:7.2f} / {by_day[1]:5.2f}"
            f"  {at_once[0]:7.2f} / {at_once[1]:5.2f}"
        )

    wall, cpu, statements, unchanged = publishes
    print(
        f"\npublish_day, best of {args.rounds} rounds over {len(days)} days: "
        f"{wall / len(days):.3f} s / {cpu / len(days):.3f} CPU-s per day, "
        f"{statements / len(days):.1f} statements per day; "
        f"published tables {'unchanged' if unchanged else 'CHANGED'}"
    )


def open_instance(kind: str, work: Path, stack: contextlib.ExitStack):
    """The Dagster instance the run writes to (closed by `stack`)."""
    import dagster as dg

    if kind == "ephemeral":
        return dg.DagsterInstance.ephemeral()
    repo = Path(__file__).resolve().parents[1]
    home = work / "dagster_home"
    home.mkdir()
    name = "dagster.postgres.yaml" if kind == "postgres" else "dagster.yaml"
    (home / "dagster.yaml").write_text((repo / "dagster_home" / name).read_text())
    if kind == "postgres":
        server = start_postgres(work / "postgres")
        stack.callback(server.stop)
        os.environ.update(server.env())
    return dg.DagsterInstance.from_config(str(home))


def time_audits(days: list[date], rounds: int) -> dict[str, tuple]:
    from usage_etl.defs.resources import ClickHouseResource
    from usage_etl.reconciliation import compare
    from usage_etl.settings import Tolerances
    from usage_etl.usage import audit, audit_days

    resource_ = ClickHouseResource()
    warehouse = resource_.get_warehouse()
    table = resource_.settings().cache_events_table
    tol = Tolerances()
    ways = {
        "quarantine_report": (
            lambda: [audit.quarantine_summary(warehouse, d) for d in days],
            lambda: audit_days.quarantine_summaries(warehouse, days),
        ),
        "conflict_report": (
            lambda: [audit.conflicts(warehouse, d) for d in days],
            lambda: audit_days.conflicts_by_day(warehouse, days),
        ),
        "rollups_cover_cache_events": (
            lambda: [compare.reconcile(warehouse, d, tol, table) for d in days],
            lambda: compare.reconcile_days(warehouse, days, tol, table),
        ),
        "node_hours_complete": (
            lambda: [compare.node_hour_coverage(warehouse, d) for d in days],
            lambda: compare.node_hour_coverages(warehouse, days),
        ),
        "usage_daily_is_exact": (
            lambda: [audit.recompute_day(warehouse, d) for d in days],
            None,  # day by day in both (audit.py's recount is per day)
        ),
    }
    best: dict[str, list] = {name: [(1e9, 1e9), (1e9, 1e9)] for name in ways}
    try:
        for _ in range(rounds):
            for name, pair in ways.items():
                for i, way in enumerate(pair):
                    if way is None:
                        best[name][i] = best[name][0]
                        continue
                    cpu, started = _cpu(), time.time()
                    way()
                    took = (time.time() - started, _cpu() - cpu)
                    best[name][i] = min(best[name][i], took)
    finally:
        resource_.teardown_after_execution(None)
    total = [tuple(sum(b[i][k] for b in best.values()) for k in (0, 1)) for i in (0, 1)]
    return {**{name: tuple(b) for name, b in best.items()}, "all five": tuple(total)}


def time_publishes(days: list[date], rounds: int) -> tuple[float, float, int, bool]:
    """Re-publish every day `rounds` times: best round's (wall, CPU, statements), and whether
    usage_hourly and usage_daily read the same afterwards (every row, every column)."""
    from usage_etl.defs.resources import ClickHouseResource
    from usage_etl.usage.publish import publish_day
    from usage_etl.warehouse.client import Warehouse

    resource_ = ClickHouseResource()
    warehouse = resource_.get_warehouse()
    fingerprint = " UNION ALL ".join(
        f"SELECT '{t}', count(), sum(cityHash64(*)) FROM {warehouse.table(t)}"
        for t in ("usage_hourly", "usage_daily")
    )
    statements = 0
    call = Warehouse._call

    def counted(self, *args, **kwargs):
        nonlocal statements
        statements += 1
        return call(self, *args, **kwargs)

    best = (1e9, 1e9, 0)
    try:
        before = sorted(warehouse.query_rows(fingerprint))
        for i in range(rounds):
            statements, cpu, started = 0, _cpu(), time.time()
            Warehouse._call = counted
            try:
                for day in days:
                    publish_day(warehouse, day, f"bench_publish_{i}")
            finally:
                Warehouse._call = call
            best = min(best, (time.time() - started, _cpu() - cpu, statements))
        after = sorted(warehouse.query_rows(fingerprint))
    finally:
        resource_.teardown_after_execution(None)
    return (*best, before == after)


if __name__ == "__main__":
    main()
