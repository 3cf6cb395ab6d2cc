"""daily_usage against ClickHouse's own ingest: wall time, rows/s, peak RSS and their ratio.

    .venv/bin/python -m bench.daily_usage --rows 1000000,3000000,10000000 --format parquet,ndjson

For every (rows, format) variant the script (1) generates one day with the simulator (10 nodes
x 24 hourly files, ~2% of files re-delivered, no other faults) and uploads it to a SeaweedFS it
starts itself, (2) runs the real pipeline — `dagster job execute -j daily_usage` in a child
process with a fresh Dagster home and embedded chDB — and (3) runs the reference in another
child process on its own chDB path: ClickHouse alone reading the same objects with
`INSERT … SELECT FROM s3(…)` into a plain MergeTree, keeping the latest version of every
event_id and building the same daily aggregate. Both are timed as whole processes (wall clock,
peak RSS of the process tree). Afterwards it compares the pipeline's usage_daily, the
reference's and the simulator's truth row by row and exits non-zero if they differ.

`--variants` limits the grid to named pairs, e.g. `--variants parquet:10000000,ndjson:10000000`.

`--grid` runs the shape grid instead (bench/shapes.py: accounts, projects, private share,
event_id length, whole-file and scattered duplicates, nodes and files per node-hour, Parquet
row groups, NDJSON), each cell at `--grid-rows` rows (default 1M); `--cells a,b` picks cells by
name. Every cell prints pipeline and reference seconds, their ratio and both peak RSS.

`--repeat N` runs pipeline and reference N times per cell, alternating, each in a fresh home
and engine on the same objects, and reports the pair with the median ratio (peak RSS: the
highest of all runs; every run's ratio is printed and in the JSON). One run per cell cannot
judge a ratio within 0.1 of its target: this machine's speed varies by more than that
between minutes (docs/performance.md, session 13).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from bench.shapes import Shape, grid, reshape_unit
from usage_etl.local_stack import SeaweedS3, start_seaweed
from usage_etl.rollups.schema import USAGE_DIMENSIONS
from usage_etl.settings import REPO_ROOT
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator

DAY = date(2026, 10, 5)
BUCKET = "bench"
DATABASE = "usage"
SUFFIX = {"parquet": "parquet", "ndjson": "ndjson.gz"}
DAILY_COLUMNS = ["day", *USAGE_DIMENSIONS, "bytes", "request_count"]
PYCACHE = Path(tempfile.gettempdir()) / "usage-etl-bench-pycache"


# -- measuring a child process -------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int  # bytes, max over time of the summed RSS of the process tree
    cpu_seconds: float  # user + system CPU of the child (and the children it waited for)
    stdout: str


def measure(cmd: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run `cmd` to completion; wall time and the peak RSS of it and its children."""
    import psutil

    started = time.perf_counter()
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err)
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        peak = 0
        root = psutil.Process(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(root))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(cmd[:6])}… failed ({proc.returncode}):\n{tail}")
    # Not wait4's ru_maxrss: Linux carries the parent's high-water RSS into a forked child, so
    # it reported this (large) benchmark process instead of the run. The 50 ms tree polling is.
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(seconds, peak, cpu, b"".join(out).decode())


def _tree_rss(root) -> int:
    import psutil

    total = 0
    try:
        for proc in [root, *root.children(recursive=True)]:
            total += proc.memory_info().rss
    except psutil.Error:
        pass  # a process ended between listing and reading: the next sample counts
    return total


# -- data ----------------------------------------------------------------------------------------


@dataclass
class Dataset:
    fmt: str
    rows: int
    prefix: str
    objects: int
    rows_written: int
    object_bytes: int
    truth: pl.DataFrame
    seconds: float


def generate(server: SeaweedS3, shape: Shape, prefix: str) -> Dataset:
    """One day streamed node-hour by node-hour from the simulator straight into S3."""
    fmt, rows = shape.fmt, shape.rows
    sim = Simulator(
        FleetSpec(
            nodes=shape.nodes, accounts=shape.accounts, rows_per_day=rows, format=fmt, seed=11,
            max_projects=shape.max_projects, private_network_share=shape.private_share,
        ),
        FaultSpec(redelivery_rate=shape.redelivery),
    )  # fmt: skip
    written = [0, 0, 0]  # objects, rows, bytes as uploaded (reshaped)
    client = server.client()
    pending: list[Future] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(4, thread_name_prefix="upload") as pool:

        def upload(files) -> None:
            files = reshape_unit(files, shape)
            on_time = [f for f in files if not f.is_late]
            written[0] += len(on_time)
            written[1] += sum(f.rows.height for f in on_time if f.rows is not None)
            written[2] += sum(len(f.body) for f in on_time)
            pending.append(pool.submit(Simulator.upload, files, client, BUCKET, prefix))
            while len(pending) > 8:  # bounded: a few node-hours of bodies in flight
                pending.pop(0).result()

        result = sim.stream_day(DAY, on_unit=upload, workers=2)
        for future in pending:
            future.result()
    if not shape.rewrites:
        written = [result.delivered, result.rows_written, result.bytes_written]
    return Dataset(
        fmt, rows, prefix, written[0], written[1], written[2],
        result.expected_usage_daily(), time.perf_counter() - started,
    )  # fmt: skip


# -- the pipeline --------------------------------------------------------------------------------


def child_env(server: SeaweedS3) -> dict[str, str]:
    """The children's environment. Bytecode goes to a cache of the benchmark's own, so a
    PYTHONDONTWRITEBYTECODE shell does not make every run recompile dagster (~10 s)."""
    env = {**os.environ, **server.env(), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_bytecode(server: SeaweedS3, workroot: Path) -> None:
    """Load the code location once, untimed, so the timed runs start like a deployed one."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "job", "list", "-m", "usage_etl.definitions"]
    measure(cmd, child_env(server), workroot / "warm.log")
    measure([sys.executable, "-c", "import bench.daily_usage, usage_etl.warehouse.client"],
            child_env(server), workroot / "warm.log")  # fmt: skip


def run_pipeline(server: SeaweedS3, data: Dataset, workdir: Path) -> tuple[Measured, Path]:
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    dsn = f"chdb://{workdir / 'pipeline' / 'engine'}"
    env = {
        **child_env(server),
        "DAGSTER_HOME": str(home),
        "USAGE_ETL_CLICKHOUSE_DSN": dsn,
        "USAGE_ETL_DATABASE": DATABASE,
        "USAGE_ETL_LANDING_URL": f"s3://{BUCKET}/{data.prefix}",
    }
    env.pop("USAGE_ETL_AS_OF", None)
    env.pop("USAGE_ETL_NODE_REGISTRY", None)
    dagster = str(Path(sys.executable).with_name("dagster"))
    tags = json.dumps({"dagster/partition": DAY.isoformat()})
    cmd = [dagster, "job", "execute", "-m", "usage_etl.definitions", "-j", "daily_usage"]
    measured = measure([*cmd, "--tags", tags], env, workdir / "pipeline.log")
    log = (workdir / "pipeline.log").read_text(errors="replace")
    if "RUN_SUCCESS" not in log or "STEP_FAILURE" in log:
        raise SystemExit(f"daily_usage did not succeed, see {workdir / 'pipeline.log'}")
    exported = workdir / "pipeline_daily.parquet"
    export = [sys.executable, "-m", "bench.daily_usage", "_export", dsn, str(exported)]
    measure(export, env, workdir / "export.log")
    return measured, exported


def export_usage_daily(dsn: str, out: str) -> None:
    """(child process) Write the pipeline's usage_daily of DAY to a Parquet file."""
    import pyarrow.parquet as pq

    from usage_etl.warehouse.client import open_warehouse

    with open_warehouse(dsn, DATABASE) as wh:
        table = wh.query_arrow(
            f"SELECT {', '.join(DAILY_COLUMNS)} FROM {wh.table('usage_daily')} "
            "WHERE day = {day:Date}",
            {"day": DAY},
        )
    pq.write_table(table, out)


# -- the reference: ClickHouse alone -------------------------------------------------------------

RAW = """
CREATE TABLE ref.raw (
    event_id String, node_id LowCardinality(String), region LowCardinality(String),
    account_id String, project_id String, direction LowCardinality(String),
    operation LowCardinality(String), artifact_kind LowCardinality(String),
    network_path LowCardinality(String), window_start DateTime64(6, 'UTC'),
    window_seconds UInt32, bytes UInt64, request_count UInt64, emitted_at DateTime64(6, 'UTC')
) ENGINE = MergeTree ORDER BY tuple()
"""
DAILY = """
CREATE TABLE ref.daily (
    day Date, account_id String, project_id String, region LowCardinality(String),
    node_id LowCardinality(String), direction LowCardinality(String),
    operation LowCardinality(String), artifact_kind LowCardinality(String),
    network_path LowCardinality(String), bytes UInt64, request_count UInt64
) ENGINE = MergeTree ORDER BY (account_id, day, project_id, region, node_id, direction,
                               operation, artifact_kind, network_path)
"""
STRUCTURE = (
    "schema_version Int64, event_id String, node_id String, region String, account_id String, "
    "project_id Nullable(String), direction String, operation String, artifact_kind String, "
    "network_path Nullable(String), window_start DateTime64(6, 'UTC'), window_seconds Int64, "
    "bytes Int64, request_count Int64, emitted_at DateTime64(6, 'UTC')"
)
INGEST = """
INSERT INTO ref.raw
SELECT event_id, node_id, region, account_id, coalesce(project_id, ''), direction, operation,
       artifact_kind, coalesce(network_path, 'unknown'), window_start, window_seconds, bytes,
       request_count, emitted_at
FROM s3({url:String}, {key:String}, {secret:String}, {format:String}, {structure:String})
SETTINGS use_hive_partitioning = 0, date_time_input_format = 'best_effort'
"""
DEDUPE_AGGREGATE = """
INSERT INTO ref.daily
SELECT toDate(v.9) AS day, v.1 AS account_id, v.2 AS project_id, v.3 AS region,
       v.4 AS node_id, v.5 AS direction, v.6 AS operation, v.7 AS artifact_kind,
       v.8 AS network_path, sum(v.10) AS bytes, sum(v.11) AS request_count
FROM (
    SELECT argMax((account_id, project_id, region, node_id, direction, operation, artifact_kind,
                   network_path, window_start, bytes, request_count), emitted_at) AS v
    FROM ref.raw
    GROUP BY event_id
)
GROUP BY day, account_id, project_id, region, node_id, direction, operation, artifact_kind,
         network_path
"""


def reference(dsn: str, url: str, fmt: str, out: str) -> None:
    """(child process) ClickHouse alone: ingest, dedupe, aggregate; prints its own timings."""
    import pyarrow.parquet as pq

    from usage_etl.warehouse.client import open_warehouse

    timings = {}
    with open_warehouse(dsn, "ref") as wh:
        started = time.perf_counter()
        wh.command("CREATE DATABASE IF NOT EXISTS ref")
        wh.command(RAW)
        wh.command(DAILY)
        wh.command(
            INGEST,
            {
                "url": url,
                "key": os.environ["AWS_ACCESS_KEY_ID"],
                "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
                "format": "Parquet" if fmt == "parquet" else "JSONEachRow",
                "structure": STRUCTURE,
            },
        )
        timings["ingest"] = time.perf_counter() - started
        wh.command(DEDUPE_AGGREGATE)
        timings["dedupe_aggregate"] = time.perf_counter() - started - timings["ingest"]
        timings["done_at"] = time.time()  # the export below is not part of the reference
        timings["rows"] = wh.query_one("SELECT count() FROM ref.raw")
        table = wh.query_arrow(f"SELECT {', '.join(DAILY_COLUMNS)} FROM ref.daily")
    pq.write_table(table, out)
    print(json.dumps(timings))


def run_reference(server: SeaweedS3, data: Dataset, workdir: Path) -> tuple[Measured, Path, dict]:
    dsn = f"chdb://{workdir / 'reference' / 'engine'}"
    day = f"date={DAY.isoformat()}"
    url = f"{server.endpoint}/{BUCKET}/{data.prefix}/{day}/hour=*/node=*/*.{SUFFIX[data.fmt]}"
    out = workdir / "reference_daily.parquet"
    env = child_env(server)
    cmd = [sys.executable, "-m", "bench.daily_usage", "_reference", dsn, url, data.fmt, str(out)]
    spawned = time.time()
    measured = measure(cmd, env, workdir / "reference.log")
    timings = json.loads(measured.stdout.strip().splitlines()[-1])
    # Wall time from spawning the process to its daily table being complete.
    work = Measured(timings["done_at"] - spawned, measured.peak_rss, measured.cpu_seconds, "")
    return work, out, timings


# -- comparing -----------------------------------------------------------------------------------


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("day").cast(pl.Date),
        *[pl.col(d).cast(pl.String) for d in USAGE_DIMENSIONS],
        pl.col("bytes").cast(pl.UInt64),
        pl.col("request_count").cast(pl.UInt64),
    ).sort(DAILY_COLUMNS)


def compare(name: str, got: pl.DataFrame, expected: pl.DataFrame) -> list[str]:
    got, expected = canonical(got), canonical(expected)
    if got.equals(expected):
        return []
    return [
        f"{name}: {got.height} groups, bytes {got['bytes'].sum()}, requests "
        f"{got['request_count'].sum()} vs expected {expected.height} groups, bytes "
        f"{expected['bytes'].sum()}, requests {expected['request_count'].sum()}"
    ]


# -- driver --------------------------------------------------------------------------------------


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def run_variant(server: SeaweedS3, workroot: Path, shape: Shape, args) -> dict:
    fmt, rows = shape.fmt, shape.rows
    slug = "".join(c if c.isalnum() else "-" for c in shape.name)
    data = generate(server, shape, f"{fmt}-{rows}-{slug}/rollups")
    print(
        f"\n== {shape.name} ({shape.describe()}) {fmt} {rows:,} rows: {data.objects} objects, "
        f"{data.rows_written:,} rows written "
        f"({data.object_bytes / 2**20:,.0f} MiB), generated in {data.seconds:.0f}s",
        flush=True,
    )
    workdir = workroot / f"{fmt}-{rows}-{slug}"
    workdir.mkdir()
    truth = data.truth.filter(pl.col("day") == DAY)
    # Pipeline and reference alternate on the same objects, each run in its own fresh home
    # and engine: a pair runs back to back, so its ratio sees the same machine.
    runs, errors = [], []
    for n in range(args.repeat):
        rundir = workdir / f"run-{n + 1}" if args.repeat > 1 else workdir
        rundir.mkdir(exist_ok=True)
        pipeline, pipeline_out = run_pipeline(server, data, rundir)
        ref, ref_out, ref_timings = run_reference(server, data, rundir)
        got = pl.read_parquet(pipeline_out)
        errors += compare("pipeline vs reference", got, pl.read_parquet(ref_out))
        errors += compare("pipeline vs simulator truth", got, truth)
        if ref_timings["rows"] != data.rows_written:
            errors.append(f"reference read {ref_timings['rows']:,} rows of {data.rows_written:,}")
        runs.append((pipeline, ref, ref_timings))
        if args.repeat > 1:
            print(
                f"  run {n + 1}: pipeline {pipeline.seconds:.1f} s, reference {ref.seconds:.1f} s, "
                f"ratio {pipeline.seconds / ref.seconds:.2f}",
                flush=True,
            )
    pipeline, ref, ref_timings = _median_run(runs)
    figures = {
        "cell": shape.name,
        "shape": shape.describe(),
        "objects": data.objects,
        "format": fmt,
        "rows": data.rows_written,
        "pipeline_s": round(pipeline.seconds, 2),
        "reference_s": round(ref.seconds, 2),
        "ratio": round(pipeline.seconds / ref.seconds, 3),
        "runs": len(runs),
        "ratios": [round(p.seconds / r.seconds, 3) for p, r, _ in runs],
        "pipeline_rows_per_s": round(data.rows_written / pipeline.seconds),
        "reference_rows_per_s": round(data.rows_written / ref.seconds),
        "pipeline_cpu_s": round(pipeline.cpu_seconds, 1),
        "reference_cpu_s": round(ref.cpu_seconds, 1),
        "pipeline_peak_rss": pipeline.peak_rss,
        "reference_peak_rss": ref.peak_rss,
        "reference_ingest_s": round(ref_timings["ingest"], 2),
        "reference_dedupe_aggregate_s": round(ref_timings["dedupe_aggregate"], 2),
        "groups": truth.height,
        "totals_match": not errors,
    }
    print(
        f"pipeline  {pipeline.seconds:7.1f} s  {figures['pipeline_rows_per_s']:>11,} rows/s  "
        f"peak RSS {gib(pipeline.peak_rss)}  CPU {pipeline.cpu_seconds:.0f} s\n"
        f"reference {ref.seconds:7.1f} s  {figures['reference_rows_per_s']:>11,} rows/s  "
        f"peak RSS {gib(ref.peak_rss)}  CPU {ref.cpu_seconds:.0f} s  "
        f"(ingest {ref_timings['ingest']:.1f} s, dedupe+aggregate "
        f"{ref_timings['dedupe_aggregate']:.1f} s)\n"
        f"ratio     {figures['ratio']:.2f}   totals {'match' if not errors else 'DIFFER'} "
        f"({truth.height:,} groups, {truth['bytes'].sum():,} bytes)",
        flush=True,
    )
    for error in errors:
        print(f"MISMATCH {error}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        _delete_prefix(server, data.prefix)
    return figures


def _median_run(runs: list[tuple[Measured, Measured, dict]]) -> tuple[Measured, Measured, dict]:
    """The pair with the median ratio (pipeline / reference), with the highest peak RSS of
    all runs on each side (the memory target holds for every run, not the typical one)."""
    ordered = sorted(runs, key=lambda run: run[0].seconds / run[1].seconds)
    pipeline, ref, timings = ordered[len(ordered) // 2]  # of an even count, the higher
    pipeline_rss = max(p.peak_rss for p, _, _ in runs)
    ref_rss = max(r.peak_rss for _, r, _ in runs)
    return (
        dataclasses.replace(pipeline, peak_rss=pipeline_rss),
        dataclasses.replace(ref, peak_rss=ref_rss),
        timings,
    )


def _delete_prefix(server: SeaweedS3, prefix: str) -> None:
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def print_table(results: list[dict]) -> None:
    print(
        "\n| format | rows | pipeline s | reference s | ratio | pipeline rows/s | "
        "peak RSS pipeline | peak RSS reference | totals |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {r['format']} | {r['rows']:,} | {r['pipeline_s']:.1f} | {r['reference_s']:.1f} | "
            f"{r['ratio']:.2f} | {r['pipeline_rows_per_s']:,} | {gib(r['pipeline_peak_rss'])} | "
            f"{gib(r['reference_peak_rss'])} | {'match' if r['totals_match'] else 'DIFFER'} |"
        )  # fmt: skip


def print_grid(results: list[dict]) -> None:
    print(
        "\n| cell | objects | rows | pipeline s (CPU s) | reference s (CPU s) | ratio "
        "(CPU ratio) | peak RSS pipeline | peak RSS reference | totals |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        cpu = r["pipeline_cpu_s"] / max(r["reference_cpu_s"], 0.1)
        spread = r.get("ratios", [])
        runs = f" [{min(spread):.2f}-{max(spread):.2f} in {len(spread)}]" if len(spread) > 1 else ""
        print(
            f"| {r['cell']} | {r['objects']:,} | {r['rows']:,} | "
            f"{r['pipeline_s']:.1f} ({r['pipeline_cpu_s']:.0f}) | "
            f"{r['reference_s']:.1f} ({r['reference_cpu_s']:.0f}) | "
            f"{r['ratio']:.2f} ({cpu:.2f}){runs} | "
            f"{gib(r['pipeline_peak_rss'])} | "
            f"{gib(r['reference_peak_rss'])} | {'match' if r['totals_match'] else 'DIFFER'} |"
        )


def variants(args) -> list[Shape]:
    if args.grid:
        cells = grid(args.grid_rows)
        if args.cells:
            # ";" separates names that contain commas ("accounts 50,000"); an exact name
            # picks only that cell.
            sep = ";" if ";" in args.cells else ","
            wanted = [c.strip() for c in args.cells.split(sep) if c.strip()]
            wanted = (
                [args.cells.strip()] if any(c.name == args.cells.strip() for c in cells) else wanted
            )
            exact = [c for c in cells if c.name in wanted]
            cells = exact or [c for c in cells if any(w in c.name for w in wanted)]
        return cells
    base = {"nodes": args.nodes, "accounts": args.accounts}
    if args.variants:
        pairs = [v.split(":") for v in args.variants.split(",")]
        return [Shape(f"{fmt}", fmt=fmt, rows=int(rows), **base) for fmt, rows in pairs]
    sizes = [int(r) for r in args.rows.split(",")]
    return [
        Shape(fmt, fmt=fmt, rows=rows, **base) for fmt in args.format.split(",") for rows in sizes
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_export":
        return export_usage_daily(*sys.argv[2:4])
    if len(sys.argv) > 1 and sys.argv[1] == "_reference":
        return reference(*sys.argv[2:6])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,3000000,10000000")
    parser.add_argument("--format", default="parquet,ndjson")
    parser.add_argument("--variants", default="", help="fmt:rows pairs instead of the grid")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--grid", action="store_true", help="the shape grid (bench/shapes.py)")
    parser.add_argument("--grid-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--cells",
        default="",
        help="grid cells: exact names, or parts of names, separated by , or ;",
    )
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="pipeline and reference runs per cell, alternating; the pair with the median "
        "ratio is reported (with every run's ratio in the JSON)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep engines and objects")
    parser.add_argument("--json", type=Path, default=None, help="also write figures here")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="bench-daily-usage-", dir=args.workdir))
    server = start_seaweed(workroot / "seaweedfs")
    results = []
    try:
        server.ensure_bucket(BUCKET)
        warm_bytecode(server, workroot)
        for shape in variants(args):
            results.append(run_variant(server, workroot, shape, args))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
    print_grid(results) if args.grid else print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not all(r["totals_match"] for r in results):
        raise SystemExit("the pipeline's usage_daily differs from the reference: see MISMATCH")


if __name__ == "__main__":
    main()
