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

Simulate once, reuse later (`--data DIR`): the first run with a DIR that is missing or empty
simulates into it (DIR/seaweedfs: SeaweedFS's data, DIR/truth/DAY.parquet: each day's
expected usage_daily, DIR/manifest.json written last); a later run with the same DIR and the
same --first/--days/--rows/--seed starts SeaweedFS on the kept data and skips the simulation.
Other parameters, a DIR without a manifest (a simulation that stopped midway) or a missing day
are refused with what differs. The pipeline only reads the landing, so a kept DIR serves any
number of runs. `--simulate-only` fills (or checks) DIR and stops:

    .venv/bin/python -m bench.backfill_bench --first 2025-11-01 --days 365 \
        --data /tmp/year --simulate-only
    .venv/bin/python -m bench.backfill_bench --first 2025-11-01 --days 365 \
        --data /tmp/year --timeout 3000

Simulating: `--sim-workers` processes (default 2) each generate a day at a time (without cache
events, which the backfill does not read) and PUT its objects on `--upload-threads` threads
(default 8). The objects and the truth are byte for byte those of one process uploading in
list order (tests/test_simulator_speed.py); only their LastModified order differs.

`--daemon-threads FILE` runs the daemon under `bench.daemon_threads`: its CPU by thread (one
per Dagster daemon, the controller's main thread) lands in FILE and in the printed figures.

CPU: `stack_cpu_s` is the user + system CPU of the deployment's process trees (webserver,
daemon, code servers, the runs) from the stack's start (after the simulation) to the backfill's
end, by kind (`CpuSampler`); SeaweedFS and PostgreSQL are not in it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from statistics import median

import polars as pl

from usage_etl.local_stack import _create_database, start_postgres, start_seaweed
from usage_etl.settings import REPO_ROOT
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator

sys.path[:0] = [str(REPO_ROOT / "tests" / "e2e"), str(REPO_ROOT / "tests")]

from backfill import launch_asset_backfill, wait_for_backfill  # noqa: E402
from e2e_stack import stack_warehouse, start_stack  # noqa: E402

from bench.daily_usage import DAILY_COLUMNS, compare  # noqa: E402

BUCKET = "landing"
DATA_LAYOUT = 1  # the --data folder's layout: bump when it changes


def fleet_specs(rows: int, seed: int) -> tuple[FleetSpec, FaultSpec]:
    """The demo fleet (8 nodes, 40 accounts) and the demo's faults."""
    return FleetSpec(nodes=8, accounts=40, rows_per_day=rows, seed=seed), FaultSpec.default()


# -- simulation: one process per worker, each a day at a time --------------------------------

_WORKER: dict = {}


def _worker_init(rows: int, seed: int, s3: dict, upload_threads: int) -> None:
    import boto3
    from botocore.config import Config

    _WORKER["sim"] = Simulator(*fleet_specs(rows, seed))
    _WORKER["threads"] = upload_threads
    _WORKER["client"] = boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2},
            max_pool_connections=max(10, upload_threads),
        ),
    )


def _simulate_day(day: date, prefix: str, truth_dir: str | None) -> tuple[date, pl.DataFrame]:
    sim, client = _WORKER["sim"], _WORKER["client"]
    sim_day = sim.generate_day(day, cache_events=False)  # the bench loads files only
    sim.upload(sim_day.files, client, BUCKET, prefix, include_late=True,
               workers=_WORKER["threads"])  # fmt: skip
    # Late files of a day land under that day's key: every day's truth includes them.
    truth = sim_day.expected_usage_daily(sim_day.files)
    if truth_dir is not None:
        truth.write_parquet(Path(truth_dir) / f"{day.isoformat()}.parquet")
    return day, truth


def simulate(
    server,
    prefix: str,
    days: list[date],
    rows: int,
    seed: int = 7,
    workers: int = 2,
    upload_threads: int = 8,
    truth_dir: Path | None = None,
) -> dict[date, pl.DataFrame]:
    """Every day simulated and uploaded (late files included), its truth returned (and written
    as `truth_dir/DAY.parquet`). `workers` processes each take a day at a time; each uploads a
    day's objects on `upload_threads` threads. The objects and the truth are those of one
    process uploading in order (the simulator is seeded per day, node and hour); only the
    objects' LastModified order differs, which nothing reads before the backfill starts."""
    s3 = {"endpoint": server.endpoint, "access_key": server.access_key,
          "secret_key": server.secret_key, "region": server.region}  # fmt: skip
    init = (rows, seed, s3, upload_threads)
    folder = str(truth_dir) if truth_dir is not None else None
    if workers <= 1:
        _worker_init(*init)
        return dict(_simulate_day(day, prefix, folder) for day in days)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=init) as pool:  # fmt: skip
        futures = [pool.submit(_simulate_day, day, prefix, folder) for day in days]
        return dict(future.result() for future in futures)


# -- the kept data folder (--data DIR) ------------------------------------------------------


class DataMismatch(SystemExit):
    pass


def data_manifest(days: list[date], rows: int, seed: int) -> dict:
    """What a kept data folder holds: the parameters a later run must match exactly."""
    fleet, faults = fleet_specs(rows, seed)
    return {
        "layout": DATA_LAYOUT,
        "first": days[0].isoformat(),
        "days": len(days),
        "rows_per_day": rows,
        "seed": seed,
        "fleet": repr(fleet),
        "faults": repr(faults),
        "bucket": BUCKET,
        "prefix": "bench/rollups",
    }


def check_data(folder: Path, wanted: dict) -> bool:
    """True if `folder` holds a complete simulation with exactly `wanted`'s parameters; False
    if it is missing or empty (simulate into it); raises DataMismatch otherwise."""
    manifest = folder / "manifest.json"
    if not folder.exists() or not any(folder.iterdir()):
        return False
    if not manifest.exists():
        raise DataMismatch(
            f"{folder} is not an empty folder and has no manifest.json (a simulation that did "
            "not finish, or another folder): remove it or choose another --data"
        )
    kept = json.loads(manifest.read_text())
    differ = {k: (kept.get(k), v) for k, v in wanted.items() if kept.get(k) != v}
    if set(differ) - {"fleet", "faults"}:  # the specs follow from rows and seed: say those
        differ = {k: v for k, v in differ.items() if k not in ("fleet", "faults")}
    if differ:
        lines = "; ".join(f"{k}: kept {a!r}, asked {b!r}" for k, (a, b) in differ.items())
        raise DataMismatch(f"{folder} holds another simulation ({lines}): use the same "
                           "--first/--days/--rows/--seed, or another --data folder")  # fmt: skip
    missing = [d for d in _days_of(kept) if not (folder / "truth" / f"{d}.parquet").exists()]
    if missing:
        raise DataMismatch(f"{folder} lacks the truth of {len(missing)} days ({missing[0]}…)")
    return True


def _days_of(manifest: dict) -> list[str]:
    first = date.fromisoformat(manifest["first"])
    return [(first + timedelta(days=i)).isoformat() for i in range(manifest["days"])]


def read_truth(folder: Path, days: list[date]) -> dict[date, pl.DataFrame]:
    return {d: pl.read_parquet(folder / "truth" / f"{d.isoformat()}.parquet") for d in days}


def _children_cpu() -> float:
    """User + system CPU of this process's reaped children (the simulation's workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _daemon_threads(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    return {"daemon_cpu_by_thread_s": json.loads(path.read_text())}


def _ts(value) -> float:
    return float(value) if value is not None else float("nan")


class CpuSampler:
    """User + system CPU of the deployment's process trees, by kind (daemon, webserver, code
    servers, runs), sampled every 0.5 s from /proc (psutil): a process's own CPU as last seen,
    so what a process spends in its last half second before exiting is missed."""

    KINDS = (("usage_etl.daemon", "daemon"), ("dagster-daemon", "daemon"),
             ("bench.daemon_threads", "daemon"),
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


def _quarter_medians(values: list[float]) -> list[float]:
    if len(values) < 4:
        return []
    size = len(values) // 4
    quarters = [values[i * size : (i + 1) * size] for i in range(3)] + [values[3 * size :]]
    return [round(median(q), 3) for q in quarters]


def run_timeline(stack, run_ids: list[str]) -> dict:
    """Where the runs' seconds went: each step's wall seconds and the per-day seconds the range
    run records in each day's materialization (`ingest_seconds`, `publish_seconds`)."""
    import dagster as dg

    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("DAGSTER_PG")})
    steps: dict[str, float] = {}
    per_day: dict[str, dict[str, list[float]]] = {"ingest_seconds": {}, "publish_seconds": {}}
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        for run_id in run_ids:
            started: dict[str, float] = {}
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    started[event.step_key] = record.timestamp
                elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                    took = record.timestamp - started.get(event.step_key, record.timestamp)
                    steps[event.step_key] = steps.get(event.step_key, 0.0) + took
                elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                    metadata = event.step_materialization_data.materialization.metadata
                    for name, seconds in per_day.items():
                        if name in metadata:
                            seconds.setdefault(event.partition, []).append(metadata[name].value)
    days = {name: [sum(v) for _, v in sorted(by_day.items())] for name, by_day in per_day.items()}
    return {
        "steps_s": {k: round(v, 2) for k, v in sorted(steps.items(), key=lambda kv: -kv[1])},
        **{
            name: {
                "days": len(values),
                "sum": round(sum(values), 2),
                "first_5": [round(v, 2) for v in values[:5]],
                "median": round(sorted(values)[len(values) // 2], 3) if values else None,
                "max": round(max(values), 2) if values else None,
                # Medians of each quarter of the range, in day order: a per-day cost that grows
                # with the days already done (parts piling up, scans of earlier days) shows.
                "quarter_medians": _quarter_medians(values),
            }
            for name, values in days.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=date.fromisoformat, default=date(2026, 10, 1))
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per day")
    parser.add_argument("--seed", type=int, default=7, help="the fleet's seed")
    parser.add_argument("--days-per-run", type=int, default=0)
    parser.add_argument("--daemon-interval", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the simulation in DIR (SeaweedFS data + truth per day), or "
        "reuse it if DIR holds one with the same days/rows/seed",
    )
    parser.add_argument(
        "--simulate-only",
        action="store_true",
        help="with --data: simulate into DIR (or check it) and stop",
    )
    parser.add_argument(
        "--sim-workers", type=int, default=2, help="processes simulating days (default 2)"
    )
    parser.add_argument("--upload-threads", type=int, default=8,
                        help="threads uploading a day's objects (default 8)")  # fmt: skip
    parser.add_argument("--daemon-threads", type=Path, default=None, metavar="FILE",
                        help="run the daemon under bench.daemon_threads: its CPU by thread "
                             "(one per Dagster daemon) into FILE")  # fmt: skip
    args = parser.parse_args()
    if args.simulate_only and args.data is None:
        parser.error("--simulate-only needs --data DIR")
    days = [args.first + timedelta(days=i) for i in range(args.days)]
    manifest = data_manifest(days, args.rows, args.seed)
    reuse = check_data(args.data, manifest) if args.data is not None else False
    workroot = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    run_id = uuid.uuid4().hex[:8]
    if args.data is not None:
        seaweed_dir, prefix = args.data / "seaweedfs", manifest["prefix"]
    else:
        seaweed_dir, prefix = workroot / "seaweedfs", f"bench-{run_id}/rollups"
    started = time.perf_counter()
    s3 = start_seaweed(seaweed_dir)
    postgres = stack = None
    try:
        if reuse:
            truth = read_truth(args.data, days)
            print(f"reusing the simulation in {args.data} ({len(days)} days; SeaweedFS up "
                  f"{time.perf_counter() - started:.0f} s after start)", flush=True)  # fmt: skip
        else:
            s3.ensure_bucket(BUCKET)
            truth_dir = None
            if args.data is not None:
                truth_dir = args.data / "truth"
                truth_dir.mkdir()
            cpu = _children_cpu()
            truth = simulate(s3, prefix, days, args.rows, args.seed, args.sim_workers,
                             args.upload_threads, truth_dir)  # fmt: skip
            took = round(time.perf_counter() - started, 1)
            print(f"simulated {len(days)} days in {took} s "
                  f"({_children_cpu() - cpu:.0f} CPU-s in the workers)", flush=True)  # fmt: skip
            if args.data is not None:
                kept = {**manifest, "simulated_s": took,
                        "simulated_at": datetime.now().isoformat(timespec="seconds")}  # fmt: skip
                (args.data / "manifest.json").write_text(json.dumps(kept, indent=2))
        if args.simulate_only:
            return
        postgres = start_postgres(workroot / "postgres")
        pg = dataclasses.replace(postgres, database=f"bench_{run_id}")
        _create_database(pg)
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
        wrap = None
        if args.daemon_threads is not None:
            wrap = ("bench.daemon_threads", str(args.daemon_threads.resolve()))
        stack = start_stack(workroot, env, wrap)
        sampler = CpuSampler([p.pid for p in stack.processes.values()])
        load_at_launch = os.getloadavg()[0]
        launched = time.time()
        backfill_id = launch_asset_backfill(stack, [d.isoformat() for d in days])
        state = wait_for_backfill(stack, backfill_id, args.timeout)
        complete = time.time()
        load_at_end = os.getloadavg()[0]
        runs = state["runs"]
        last_end = max(_ts(r["endTime"]) for r in runs)
        first_start = min(_ts(r["startTime"]) for r in runs)
        run_seconds = sum(_ts(r["endTime"]) - _ts(r["startTime"]) for r in runs)
        statuses = sorted({r["status"] for r in runs})
        stack_cpu = sampler.totals()
        stack.stop()
        timeline = run_timeline(stack, [r["runId"] for r in runs])
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
            **_daemon_threads(args.daemon_threads),
            "daemon_interval_s": args.daemon_interval,
            "load_1min_at_launch_and_end": [round(load_at_launch, 1), round(load_at_end, 1)],
            "timeline": timeline,
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
        if postgres is not None:
            postgres.stop()
        s3.stop()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)


if __name__ == "__main__":
    main()
