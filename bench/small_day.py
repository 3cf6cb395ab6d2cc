"""What ingesting one small day costs: `ingest_day` alone, staged vs direct native inserts.

    .venv/bin/python -m bench.small_day [--days 4] [--rows 20000] [--modes fetched,staged,direct]
                                        [--statements] [--profile N]

Starts SeaweedFS, simulates the demo fleet (8 nodes, 40 accounts, the demo's faults: ~312
objects a day at 20,000 rows, ~151 Parquet + ~158 NDJSON.gz), opens the embedded warehouse as
a run does, then ingests every day once per mode, alternating the modes day by day on the
same objects (the ingest tables are emptied before each ingest, so every ingest decides the
whole day). `staged` is the shipped path (small files staged, USAGE_ETL_NATIVE_STAGE_ROWS);
`direct` sets native.STAGE_ROWS = 0, the path before session 10. `fetched` (session 11) fetches
the small objects once in Python and stages them from local copies (native.FETCH, the embedded
engine's default); `staged` then sets native.FETCH = False (the s3() path a server DSN keeps).
Prints per ingest the wall seconds, this process's CPU seconds (chDB runs in it) and
SeaweedFS's CPU seconds, then each mode's median. `--statements` adds the wall seconds per
kind of statement; `--profile N` prints the N most expensive functions (cumulative) of the
first mode's last ingest.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import resource
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psutil

from bench.cpu import processes_cpu_seconds
from bench.demo_fleet import land_demo_days
from usage_etl.local_stack import start_seaweed

BUCKET = "landing"
PREFIX = "small/rollups"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _kind(sql: str) -> str:
    text = " ".join(sql.split())
    staged = "_build_stage_" in text
    reads_s3 = "s3({s3_url" in text
    reads_file = "file({file_glob" in text
    for matches, name in (
        ("ParquetMetadata" in text and reads_file, "footers (local copies)"),
        ("ParquetMetadata" in text, "footers"),
        (staged and reads_file, "stage read (local copies)"),
        ("RawBLOB" in text, "footer screen (RawBLOB)"),
        (staged and reads_s3, "stage read (s3)"),
        (staged and ("CREATE" in text or "DROP" in text), "stage create/drop"),
        (reads_s3 and "LineAsString" in text, "ndjson insert (direct)"),
        (reads_s3, "parquet insert (direct)"),
        (staged and "JSONExtract" in text, "ndjson insert (staged)"),
        (staged, "parquet insert (staged)"),
        ("GROUP BY load_key" in text, "per-chunk counts"),
        ("ingest_objects" in text, "ledger read"),
    ):
        if matches:
            return name
    return text[:40]


class _Timed:
    """Wraps a warehouse's command/query_rows/insert_* to sum wall seconds per statement kind."""

    def __init__(self, warehouse):
        self.seconds: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()
        for name in ("command", "query_rows", "insert_rows", "insert_arrow", "insert_json_rows"):
            original = getattr(warehouse, name)
            setattr(warehouse, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def timed(first, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(first, *args, **kwargs)
            finally:
                kind = _kind(first) if name in ("command", "query_rows") else f"{name} {first}"
                self.seconds[kind] += time.perf_counter() - start
                self.calls[kind] += 1

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=date.fromisoformat, default=date(2026, 10, 1))
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--modes", default="fetched,staged")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--profile", type=int, default=0)
    args = parser.parse_args()
    days = [args.first + timedelta(days=i) for i in range(args.days)]
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-small-day-"))
    s3 = start_seaweed(work / "seaweedfs")
    try:
        client = land_demo_days(s3, work, BUCKET, PREFIX, days, args.rows)

        from usage_etl.defs.resources import ClickHouseResource
        from usage_etl.landing import Landing
        from usage_etl.usage import load, native

        warehouse = ClickHouseResource().get_warehouse()
        timed = _Timed(warehouse) if args.statements else None
        if timed:  # the GETs of the fetched mode are no statement: timed as "fetch (Python)"
            fetch_day = load.fetch_day

            def timed_fetch(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fetch_day(*args, **kwargs)
                finally:
                    timed.seconds["fetch (Python GETs)"] += time.perf_counter() - start
                    timed.calls["fetch (Python GETs)"] += 1

            load.fetch_day = timed_fetch
        landing = Landing(client, BUCKET, PREFIX)
        access = native.s3_access_from_client(client)
        weed = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "weed" in " ".join(p.info["cmdline"] or [])
        ]
        stage_rows = native.STAGE_ROWS
        figures: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
        statements: dict[str, collections.Counter] = {m: collections.Counter() for m in modes}
        calls: dict[str, collections.Counter] = {m: collections.Counter() for m in modes}
        profile = cProfile.Profile() if args.profile else None
        print(f"{'day':<12}{'mode':<8}{'objects':>8}{'native':>7}{'python':>7}"
              f"{'wall s':>9}{'CPU s':>8}{'weed CPU':>9}", flush=True)  # fmt: skip
        for number, day in enumerate(days):
            for mode in modes if number % 2 == 0 else reversed(modes):
                for table in ("ingest_objects", "rollup_rows", "quarantined_rows"):
                    warehouse.command(f"TRUNCATE TABLE {warehouse.table(table)}")
                native.STAGE_ROWS = stage_rows if mode in ("staged", "fetched") else 0
                native.FETCH = mode == "fetched"
                if timed:
                    timed.seconds.clear()
                    timed.calls.clear()
                profiling = profile is not None and mode == modes[0] and number == len(days) - 1
                cpu, weed_cpu, start = _cpu(), processes_cpu_seconds(weed), time.perf_counter()
                if profiling:
                    profile.enable()
                report = load.ingest_day(
                    warehouse, landing, day, f"bench-{mode}-{day}", s3_access=access
                )
                if profiling:
                    profile.disable()
                weed_used = processes_cpu_seconds(weed) - weed_cpu
                got = (time.perf_counter() - start, _cpu() - cpu, weed_used)
                if number:  # the first day warms caches and imports: not in the medians
                    figures[mode].append(got)
                    if timed:
                        statements[mode].update(timed.seconds)
                        calls[mode].update(timed.calls)
                python = report.objects_listed - report.objects_read_natively
                print(f"{day!s:<12}{mode:<8}{report.objects_listed:>8}"
                      f"{report.objects_read_natively:>7}{python:>7}"
                      f"{got[0]:>9.3f}{got[1]:>8.3f}{got[2]:>9.3f}", flush=True)  # fmt: skip
        print("\nmedian per day (first day excluded):")
        for mode, rows in figures.items():
            if rows:
                wall, cpu, weed_cpu = (statistics.median(r[i] for r in rows) for i in range(3))
                print(f"  {mode:<8} wall {wall:.3f} s  CPU {cpu:.3f} s  "
                      f"SeaweedFS CPU {weed_cpu:.3f} s")  # fmt: skip
        if timed:
            for mode, seconds in statements.items():
                n = max(1, len(figures[mode]))
                print(f"\nwall s and statements per day by kind ({mode}):")
                for kind, total in seconds.most_common():
                    print(f"  {total / n:7.3f}  {calls[mode][kind] / n:5.1f}  {kind}")
        if profile is not None:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
