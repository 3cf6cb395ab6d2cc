"""Simulator throughput: rows/s generating one day of N rollup rows, Parquet and NDJSON.gz.

    .venv/bin/python -m bench.simulate                 # 10M rows, both formats
    .venv/bin/python -m bench.simulate --rows 1000000 --format parquet --faults default

Measures generation + serialization (file bodies built, truth and cache events computed);
the bodies are discarded instead of uploaded, so the number is the simulator's own speed.
"""

from __future__ import annotations

import argparse
import time
from datetime import date

from usage_etl.simulator import FaultSpec, FleetSpec, Simulator


def run(rows: int, fmt: str, faults: str, nodes: int, accounts: int, workers: int) -> None:
    spec = FleetSpec(nodes=nodes, accounts=accounts, rows_per_day=rows, format=fmt, seed=1)
    started = time.perf_counter()
    sim = Simulator(spec, FaultSpec.parse(faults))
    result = sim.stream_day(date(2026, 10, 5), on_unit=lambda files: None, workers=workers)
    elapsed = time.perf_counter() - started
    print(
        f"{fmt:8s} rows={result.rows:,} written={result.rows_written:,} files={result.files:,} "
        f"bodies={result.bytes_written / 2**20:,.0f} MiB cache_events={result.cache_events:,} "
        f"time={elapsed:.1f}s -> {result.rows / elapsed:,.0f} rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--format", choices=["parquet", "ndjson", "both"], default="both")
    parser.add_argument("--faults", default="none")
    parser.add_argument("--nodes", type=int, default=48)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    formats = ["parquet", "ndjson"] if args.format == "both" else [args.format]
    for fmt in formats:
        run(args.rows, fmt, args.faults, args.nodes, args.accounts, args.workers)


if __name__ == "__main__":
    main()
