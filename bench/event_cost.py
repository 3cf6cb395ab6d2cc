"""What one Dagster event costs on the production instance's PostgreSQL event log.

    .venv/bin/python -m bench.event_cost [--days 31] [--rounds 3]

Starts a PostgreSQL, opens an instance from dagster_home/dagster.postgres.yaml, and stores what
a range run stores per day: 3 partitioned materializations, 5 partitioned check evaluations and
4 log messages (bench.range_checks counts them), for `--days` days of one run. It does so with
the event log of the file (`KeptOpenPostgresEventLogStorage`, one kept-open connection) and with
dagster-postgres' own (`PostgresEventLogStorage`: a new connection per statement), alternating
`--rounds` times, and prints per event: wall, this process's CPU, PostgreSQL's CPU (its server
processes, from /proc) and connections opened.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.cpu import tree_cpu_seconds
from usage_etl.local_stack import start_postgres

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("usage_daily_is_exact", "conflict_report", "quarantine_report", "nodes", "cover")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def store_range(instance, days: int) -> int:
    import dagster as dg
    from dagster._core.events import (
        AssetMaterializationPlannedData,
        DagsterEvent,
        DagsterEventType,
        StepMaterializationData,
    )
    from dagster._core.events.log import EventLogEntry

    run = instance.create_run_for_job(
        dg.GraphDefinition(name="bench_events", node_defs=[]).to_job(), run_id=None
    )
    keys = [dg.AssetKey(k) for k in ("rollup_rows", "usage_hourly", "usage_daily")]
    stored = 0

    def store(event_type, data=None, message=""):
        nonlocal stored
        event = None
        if event_type is not None:
            event = DagsterEvent(event_type.value, "bench_events", event_specific_data=data)
        instance.handle_new_event(
            EventLogEntry(
                error_info=None, level=20, user_message=message, run_id=run.run_id,
                timestamp=time.time(), step_key="step", job_name="bench_events",
                dagster_event=event,
            )
        )  # fmt: skip
        stored += 1

    for key in keys:
        for d in range(days):
            store(
                DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                AssetMaterializationPlannedData(key, partition=f"2026-10-{d % 28 + 1:02d}"),
            )
    for d in range(days):
        day = f"2026-10-{d % 28 + 1:02d}"
        for _ in range(4):
            store(None, message=f"{day}: read 100 files")
        for key in keys:
            materialization = dg.AssetMaterialization(
                key, partition=day, metadata={"rows": 2000, "day": day}
            )
            store(DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(materialization))
        for name in CHECKS:
            evaluation = dg.AssetCheckEvaluation(
                asset_key=keys[-1], check_name=name, passed=True, metadata={"day": day},
                partition=day,
            )  # fmt: skip
            store(DagsterEventType.ASSET_CHECK_EVALUATION, evaluation)
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import dagster as dg
    from dagster_postgres.event_log import PostgresEventLogStorage
    from sqlalchemy import event

    work = Path(tempfile.mkdtemp(prefix="bench-event-cost-"))
    server = start_postgres(work / "postgres")
    try:
        os.environ.update(server.env())
        home = work / "home"
        home.mkdir()
        source = (REPO / "dagster_home" / "dagster.postgres.yaml").read_text()
        (home / "dagster.yaml").write_text(source)
        best: dict[str, tuple] = {}
        with dg.DagsterInstance.from_config(str(home)) as instance:
            kept = instance.event_log_storage
            dagsters = PostgresEventLogStorage(kept.postgres_url)
            dagsters.register_instance(instance)
            pid = _server_pid(Path(server.data_dir))
            for _ in range(args.rounds):
                for name, storage in (("kept open", kept), ("dagster-postgres", dagsters)):
                    instance._event_storage = storage  # the bench swaps the event log
                    opened: list[int] = []

                    def listener(conn, record, add=opened.append):
                        add(1)

                    event.listen(storage._engine, "connect", listener)
                    cpu, pg_cpu, started = _cpu(), tree_cpu_seconds(pid), time.time()
                    n = store_range(instance, args.days)
                    took = (
                        time.time() - started, _cpu() - cpu, tree_cpu_seconds(pid) - pg_cpu,
                        len(opened), n,
                    )  # fmt: skip
                    event.remove(storage._engine, "connect", listener)
                    if name not in best or took[0] < best[name][0]:
                        best[name] = took
            instance._event_storage = kept
            dagsters.dispose()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.days} days of a range run's events, best of {args.rounds} rounds:")
    for name, (wall, cpu, pg_cpu, opened, n) in best.items():
        print(
            f"  {name:<17} {n} events: wall {wall:6.2f} s ({wall / n * 1000:5.2f} ms/event), "
            f"CPU here {cpu:5.2f} s ({cpu / n * 1000:5.2f} ms/event), PostgreSQL CPU "
            f"{pg_cpu:5.2f} s ({pg_cpu / n * 1000:5.2f} ms/event), {opened} connections"
        )


if __name__ == "__main__":
    main()
