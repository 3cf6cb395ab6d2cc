"""A daily_usage backfill through the daemon, as the UI launches it: wall time and exactness.

    .venv/bin/python -m bench.backfill_bench --first 2026-10-01 --days 31
    .venv/bin/python -m bench.backfill_bench --days 31 --days-per-run 1    # one run per day

Starts SeaweedFS, PostgreSQL and a Dagster deployment (webserver + daemon, the production
PostgreSQL instance file, `warehouse` pool 1, embedded chDB), simulates the demo fleet (8
nodes, 40 accounts, 20,000 rows a day, the demo's faults: re-deliveries, corrections, late,
truncated and stray files) for every day, launches one asset backfill of rollup_rows,
usage_hourly and usage_daily over the days through the webserver's GraphQL API (the call the
UI's "Launch backfill" makes), and times it from the launch to the last run's end (and to
the daemon marking the backfill complete). Then compares every day's usage_daily with the
simulator's truth and exits non-zero on any difference.

`--days-per-run N` sets USAGE_ETL_BACKFILL_DAYS_PER_RUN for the deployment (default: the
code's policy, one run for the whole range). `--daemon-interval S` sets
USAGE_ETL_DAEMON_INTERVAL_SECONDS for the daemon (`python -m usage_etl.daemon`; default: its
2 s; 30 is Dagster's own loop, the figure before session 9).

CPU: `stack_cpu_s` is the user + system CPU of the deployment's process trees (webserver,
daemon, code servers, the runs) from the stack's start (after the simulation) to the backfill's
end, by kind (`CpuSampler`); SeaweedFS and PostgreSQL are not in it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from usage_etl.local_stack import _create_database, start_postgres, start_seaweed
from usage_etl.settings import REPO_ROOT
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator

sys.path[:0] = [str(REPO_ROOT / "tests" / "e2e"), str(REPO_ROOT / "tests")]

from backfill import launch_asset_backfill, wait_for_backfill  # noqa: E402
from e2e_stack import stack_warehouse, start_stack  # noqa: E402

from bench.daily_usage import DAILY_COLUMNS, compare  # noqa: E402

BUCKET = "landing"


def simulate(server, prefix: str, days: list[date], rows: int) -> dict[date, pl.DataFrame]:
    sim = Simulator(FleetSpec(nodes=8, accounts=40, rows_per_day=rows, seed=7), FaultSpec.default())
    client = server.client()
    truth = {}
    for day in days:
        sim_day = sim.generate_day(day)
        sim.upload(sim_day.files, client, BUCKET, prefix, include_late=True)
        truth[day] = sim_day.expected_usage_daily(sim_day.files)
    # Late files of a day land under that day's key: every day's truth includes them.
    return truth


def _ts(value) -> float:
    return float(value) if value is not None else float("nan")


class CpuSampler:
    """User + system CPU of the deployment's process trees, by kind (daemon, webserver, code
    servers, runs), sampled every 0.5 s from /proc (psutil): a process's own CPU as last seen,
    so what a process spends in its last half second before exiting is missed."""

    KINDS = (("usage_etl.daemon", "daemon"), ("dagster-daemon", "daemon"),
             ("webserver", "webserver"), ("api grpc", "code_servers"),
             ("execute_run", "runs"))  # fmt: skip

    def __init__(self, roots: list[int]):
        import psutil

        self.psutil, self.roots = psutil, roots
        self.seen: dict[tuple[int, float], tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _kind(self, proc) -> str:
        line = " ".join(proc.cmdline())
        return next((kind for needle, kind in self.KINDS if needle in line), "other")

    def _sample(self) -> None:
        for root in self.roots:
            try:
                top = self.psutil.Process(root)
                procs = [top, *top.children(recursive=True)]
            except self.psutil.Error:
                continue
            for proc in procs:
                try:
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    kind = self.seen[key][0] if key in self.seen else self._kind(proc)
                    self.seen[key] = (kind, times.user + times.system)
                except self.psutil.Error:
                    continue

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self._sample()

    def totals(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        by_kind: dict[str, float] = {}
        for kind, seconds in self.seen.values():
            by_kind[kind] = round(by_kind.get(kind, 0.0) + seconds, 1)
        by_kind["total"] = round(sum(seconds for _, seconds in self.seen.values()), 1)
        return by_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=date.fromisoformat, default=date(2026, 10, 1))
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per day")
    parser.add_argument("--days-per-run", type=int, default=0)
    parser.add_argument("--daemon-interval", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()
    days = [args.first + timedelta(days=i) for i in range(args.days)]
    workroot = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    run_id = uuid.uuid4().hex[:8]
    s3 = start_seaweed(workroot / "seaweedfs")
    postgres = start_postgres(workroot / "postgres")
    stack = None
    try:
        s3.ensure_bucket(BUCKET)
        pg = dataclasses.replace(postgres, database=f"bench_{run_id}")
        _create_database(pg)
        prefix = f"bench-{run_id}/rollups"
        started = time.perf_counter()
        truth = simulate(s3, prefix, days, args.rows)
        print(f"simulated {len(days)} days in {time.perf_counter() - started:.0f} s", flush=True)
        env = {
            **s3.env(), **pg.env(),
            "USAGE_ETL_CLICKHOUSE_DSN": f"chdb://{workroot / 'engine'}",
            "USAGE_ETL_DATABASE": f"bench_{run_id}",
            "USAGE_ETL_LANDING_URL": f"s3://{BUCKET}/{prefix}",
        }  # fmt: skip
        if args.days_per_run:
            env["USAGE_ETL_BACKFILL_DAYS_PER_RUN"] = str(args.days_per_run)
        if args.daemon_interval is not None:
            env["USAGE_ETL_DAEMON_INTERVAL_SECONDS"] = str(args.daemon_interval)
        stack = start_stack(workroot, env)
        sampler = CpuSampler([p.pid for p in stack.processes.values()])
        launched = time.time()
        backfill_id = launch_asset_backfill(stack, [d.isoformat() for d in days])
        state = wait_for_backfill(stack, backfill_id, args.timeout)
        complete = time.time()
        runs = state["runs"]
        last_end = max(_ts(r["endTime"]) for r in runs)
        first_start = min(_ts(r["startTime"]) for r in runs)
        run_seconds = sum(_ts(r["endTime"]) - _ts(r["startTime"]) for r in runs)
        statuses = sorted({r["status"] for r in runs})
        stack_cpu = sampler.totals()
        stack.stop()
        errors = []
        with stack_warehouse(stack) as warehouse:
            for day in days:
                got = warehouse.query_arrow(
                    f"SELECT {', '.join(DAILY_COLUMNS)} FROM {warehouse.table('usage_daily')} "
                    "WHERE day = {day:Date}",
                    {"day": day},
                )
                expected = truth[day].filter(pl.col("day") == day)
                errors += compare(f"{day}", pl.from_arrow(got), expected)
        figures = {
            "days": len(days),
            "rows_per_day": args.rows,
            "runs": len(runs),
            "statuses": statuses,
            "launch_to_last_run_end_s": round(last_end - launched, 1),
            "launch_to_backfill_complete_s": round(complete - launched, 1),
            "launch_to_first_run_start_s": round(first_start - launched, 1),
            "sum_of_run_seconds": round(run_seconds, 1),
            "stack_cpu_s": stack_cpu,
            "daemon_interval_s": args.daemon_interval,
            "exact_days": len(days) - len(errors),
            "at": datetime.now().isoformat(timespec="seconds"),
        }
        print(json.dumps(figures, indent=2))
        for error in errors:
            print(f"MISMATCH {error}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        if errors or statuses != ["SUCCESS"]:
            raise SystemExit("the backfill did not publish every day exactly")
    finally:
        if stack is not None:
            stack.stop()
        postgres.stop()
        s3.stop()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)


if __name__ == "__main__":
    main()
