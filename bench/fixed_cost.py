"""Where the seconds of a run of an EMPTY day go (the fixed cost every daily_usage run pays).

    .venv/bin/python -m bench.fixed_cost [--repeat 3] [--profile FILE]

Starts SeaweedFS (an empty landing prefix), then runs, each in a fresh process:
`python -c "import dagster"` (the floor), loading the code location, and `dagster job execute
-j daily_usage` of an empty day on a fresh Dagster home (SQLite) and a fresh embedded engine,
then the same again on the now-migrated engine and the same Dagster home (the steady state of a
daily run: a deployment's instance exists; `--fresh-home` gives every run a new home, as this
benchmark did before session 9, which adds creating the SQLite schemas to each run). It prints
wall and CPU seconds of each, the steady state's median beyond `import dagster`, and for the
runs the phases from the run's own event log: process start -> RUN_START, RUN_START -> first
STEP_START, each step, last step -> RUN_SUCCESS, and the events written by type.
`--profile FILE` also writes a cProfile of the last steady-state run.

CPU seconds are the steadier figure on a shared machine; wall seconds vary with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from statistics import median

from usage_etl.local_stack import start_seaweed
from usage_etl.settings import REPO_ROOT

DAY = date(2026, 10, 5)
BUCKET = "bench"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed:\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stderr


def phases(home: Path, spawned: float) -> dict[str, float]:
    """Phases of the run stored in this Dagster home, from its event log timestamps."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs(limit=1)
        records = instance.all_logs(run.run_id)
    out: dict[str, float] = {}
    kinds = [(r.dagster_event_type, r.step_key, r.timestamp) for r in records if r.is_dagster_event]
    start = next(t for k, _, t in kinds if k == dg.DagsterEventType.RUN_START)
    end = next(t for k, _, t in kinds if k == dg.DagsterEventType.RUN_SUCCESS)
    step_starts = {s: t for k, s, t in kinds if k == dg.DagsterEventType.STEP_START}
    step_ends = {s: t for k, s, t in kinds if k == dg.DagsterEventType.STEP_SUCCESS}
    out["process start -> RUN_START"] = start - spawned
    first = min(step_starts.values())
    out["RUN_START -> first STEP_START (resources, engine)"] = first - start
    previous = first
    for step, begun in sorted(step_starts.items(), key=lambda kv: kv[1]):
        out[f"  gap before {step}"] = begun - previous
        out[f"  step {step}"] = step_ends[step] - begun
        previous = step_ends[step]
    out["last STEP_SUCCESS -> RUN_SUCCESS"] = end - previous
    out["events written"] = len(records)
    by_type: dict[str, int] = {}
    for kind, _, _ in kinds:
        by_type[kind.value] = by_type.get(kind.value, 0) + 1
    for kind, count in sorted(by_type.items(), key=lambda kv: -kv[1]):
        out[f"  {kind}"] = count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--fresh-home", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fixed-cost-"))
    s3 = start_seaweed(work / "seaweedfs")
    results: dict[str, list] = {}
    try:
        s3.ensure_bucket(BUCKET)
        env = {**os.environ, **s3.env(), "PYTHONWARNINGS": "ignore"}
        env["USAGE_ETL_CLICKHOUSE_DSN"] = f"chdb://{work / 'engine'}"
        env["USAGE_ETL_DATABASE"] = "usage"
        env["USAGE_ETL_LANDING_URL"] = f"s3://{BUCKET}/empty/rollups"
        for key in ("USAGE_ETL_AS_OF", "USAGE_ETL_NODE_REGISTRY"):
            env.pop(key, None)
        py = sys.executable
        timed([py, "-c", "import usage_etl.definitions"], env)  # warm bytecode, untimed
        tags = json.dumps({"dagster/partition": DAY.isoformat()})
        run = [DAGSTER, "job", "execute", "-m", "usage_etl.definitions", "-j", "daily_usage",
               "--tags", tags]  # fmt: skip
        for i in range(args.repeat + 1):
            for name, cmd in (
                ("import dagster", [py, "-c", "import dagster"]),
                ("load definitions", [py, "-c",
                                      "from usage_etl.definitions import defs; defs()"]),
            ):  # fmt: skip
                results.setdefault(name, []).append(timed(cmd, env)[:2])
            home = work / f"home-{i if args.fresh_home else 0}"
            if not home.exists():
                home.mkdir()
                shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
            run_env = {**env, "DAGSTER_HOME": str(home)}
            cmd = run
            if args.profile and i == args.repeat:
                cmd = [py, "-m", "cProfile", "-o", str(args.profile), DAGSTER, *run[1:]]
            spawned = time.time()
            wall, cpu, _ = timed(cmd, run_env)
            name = "empty day, fresh engine" if i == 0 else "empty day, migrated engine"
            results.setdefault(name, []).append((wall, cpu))
            results.setdefault(f"{name} phases", []).append(phases(home, spawned))
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    for name, values in results.items():
        if name.endswith("phases"):
            print(f"\n{name} (last run):")
            for phase, seconds in values[-1].items():
                print(f"  {phase:<60} {seconds:7.2f}")
        else:
            walls = ", ".join(f"{w:.2f}" for w, _ in values)
            cpus = ", ".join(f"{c:.2f}" for _, c in values)
            print(f"{name:<28} wall s: {walls:<24} CPU s: {cpus}")
    steady = results.get("empty day, migrated engine", [])
    if args.profile and steady:
        steady = steady[:-1]  # the profiled run is slower
    if steady:
        floor = results["import dagster"]
        wall = median(w for w, _ in steady) - median(w for w, _ in floor)
        cpu = median(c for _, c in steady) - median(c for _, c in floor)
        print(
            f"\nsteady state beyond `import dagster` (medians): wall {wall:.2f} s, CPU {cpu:.2f} s"
        )


if __name__ == "__main__":
    main()
