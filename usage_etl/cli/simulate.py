"""`usage-etl simulate`: a realistic, faulty node fleet writing rollups to the landing bucket.

Streams each day node-hour by node-hour (memory stays flat at any --rows-per-day), uploads the
files in order through boto3 (AWS_ENDPOINT_URL_S3 and AWS_* honoured), inserts the cache
events into ClickHouse, and can write the exact expected usage next to them (--truth-dir).
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console

from usage_etl.s3 import s3_client
from usage_etl.settings import Settings, load_settings
from usage_etl.simulator import FaultSpec, FleetSpec, SimFile, Simulator, StreamResult
from usage_etl.simulator.core import date_range
from usage_etl.simulator.spec import FAULT_OPTIONS_HELP, FORMATS
from usage_etl.simulator.writer import full_key
from usage_etl.warehouse.client import Warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

FAULTS_HELP = (
    "Fault preset `none` or `default`, optionally followed by comma-separated overrides, e.g. "
    "`default,late_hours=3;4,bad_row_rate=0.01` (the options are listed below)."
)
EVENT_BATCH_ROWS = 500_000
MAX_PENDING_UPLOADS = 64


def _fault_epilog() -> str:
    lines = [f"{name}: {text}." for name, text in FAULT_OPTIONS_HELP.items()]
    return "Fault options for --faults (name=value):\n\n" + "\n\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("simulate", epilog=_fault_epilog())(simulate)


def _parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from None


def simulate(
    start: str = typer.Option(..., "--start", help="First UTC day to generate (YYYY-MM-DD)."),
    end: str | None = typer.Option(
        None, "--end", help="Last UTC day to generate, included (default: --start)."
    ),
    nodes: int = typer.Option(6, "--nodes", min=1, help="Cache nodes in the fleet."),
    accounts: int = typer.Option(
        40, "--accounts", min=1, help="Tenant accounts (Zipf-like sizes; `acme` is one)."
    ),
    rows_per_day: int = typer.Option(
        20_000, "--rows-per-day", min=0, help="Rollup rows per day over the whole fleet."
    ),
    max_projects: int = typer.Option(
        4, "--max-projects", min=0, help="Each account has 0..N projects."
    ),
    file_format: str = typer.Option(
        "mixed", "--format", help="parquet | ndjson | mixed (mixed: chosen per node)."
    ),
    seed: int = typer.Option(7, "--seed", help="Seed: same options + seed = same files."),
    faults: str = typer.Option("default", "--faults", help=FAULTS_HELP),
    late: bool = typer.Option(
        False,
        "--late/--no-late",
        help="Also upload the files that arrive late (default: hold them back).",
    ),
    only_late: bool = typer.Option(
        False,
        "--only-late",
        help="Upload only the late files (run after an earlier --no-late run with the same "
        "options to deliver them); writes no cache events.",
    ),
    cache_events: bool = typer.Option(
        True,
        "--cache-events/--no-cache-events",
        help="Insert the matching cache events into ClickHouse (skipped for a day that already "
        "has cache events).",
    ),
    truth_dir: str | None = typer.Option(
        None,
        "--truth-dir",
        help="Write the expected usage_daily rows (CSV) and a summary (JSON) per day here.",
    ),
    landing_url: str | None = typer.Option(
        None, "--landing-url", help="s3://bucket/prefix (default: USAGE_ETL_LANDING_URL)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Generate and write the truth only; upload and insert nothing."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Generator threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate a faulty cache-node fleet's hourly rollups into the landing bucket.

    Files follow the rollup contract and go to USAGE_ETL_LANDING_URL (or --landing-url);
    cache events go to the configured ClickHouse. The same options and --seed always give
    the same files, so `--no-late` now and `--only-late` later deliver one consistent day.
    """
    first = _parse_day(start)
    last = _parse_day(end) if end else first
    if last < first:
        raise typer.BadParameter("--end is before --start")
    if file_format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    try:
        fault_spec = FaultSpec.parse(faults)
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    overrides = {"landing_url": landing_url} if landing_url else {}
    settings = Settings(**overrides) if overrides else load_settings()
    fleet = FleetSpec(
        nodes=nodes,
        accounts=accounts,
        rows_per_day=rows_per_day,
        max_projects=max_projects,
        format=file_format,
        seed=seed,
    )
    run = _Run(Simulator(fleet, fault_spec), settings, Console(stderr=True), dry_run)
    run.execute(
        date_range(first, last),
        late,
        only_late,
        cache_events and not only_late,
        Path(truth_dir) if truth_dir else None,
        workers,
        progress,
    )


class _Run:
    """One CLI invocation: uploads, cache events and truth files for a range of days."""

    def __init__(self, sim: Simulator, settings: Settings, console: Console, dry_run: bool):
        self.sim, self.settings, self.console, self.dry_run = sim, settings, console, dry_run
        self.s3 = None if dry_run else s3_client()
        self.events_written = 0

    def execute(self, days, late, only_late, with_events, truth_dir, workers, progress) -> None:
        warehouse = None
        if with_events and not self.dry_run:
            warehouse = Warehouse.open(
                self.settings.clickhouse_dsn,
                self.settings.database,
                self.settings.chdb_lock_timeout_seconds,
            )
            apply_migrations(warehouse, DdlOptions.from_settings(self.settings))
        try:
            for day in days:
                result = self._day(day, late, only_late, warehouse, workers, progress)
                if truth_dir:
                    _write_truth(truth_dir, result, include_late=late or only_late)
                self._report(result)
        finally:
            if warehouse is not None:
                warehouse.close()

    def _select(self, late: bool, only_late: bool):
        if only_late:
            return lambda f: f.is_late
        return (lambda f: True) if late else (lambda f: not f.is_late)

    def _day(self, day, late, only_late, warehouse, workers, progress) -> StreamResult:
        events = _EventSink(warehouse, self.settings.cache_events_table, day, self.console)
        with ThreadPoolExecutor(4) as pool:
            pending: list[Future] = []

            def on_unit(files: list[SimFile]) -> None:
                if self.dry_run:
                    return
                pending.append(pool.submit(self._upload, files))
                if len(pending) >= MAX_PENDING_UPLOADS:
                    pending.pop(0).result()

            result = self.sim.stream_day(
                day,
                on_unit=on_unit,
                on_cache_events=events.add if warehouse is not None else None,
                select=self._select(late, only_late),
                progress=progress,
                workers=workers,
            )
            for future in pending:
                future.result()
        events.flush()
        self.events_written = events.written
        return result

    def _upload(self, files: list[SimFile]) -> None:
        # One node-hour's files go up in order: a correction may deliberately land first.
        for f in files:
            key = full_key(self.settings.landing_prefix, f.key)
            self.s3.put_object(Bucket=self.settings.landing_bucket, Key=key, Body=f.body)

    def _report(self, result: StreamResult) -> None:
        target = "(dry run)" if self.dry_run else self.settings.landing_url
        faults = ", ".join(f"{k}={v}" for k, v in sorted(result.faults.items())) or "none"
        self.console.print(
            f"{result.day}: {result.rows:,} rollup cells, {result.delivered:,}/{result.files:,} "
            f"objects delivered to {target}, {self.events_written:,} of "
            f"{result.cache_events:,} cache events written; "
            f"faults: {faults}",
            highlight=False,
        )


class _EventSink:
    """Batches cache events into large inserts; skips a day that already has events."""

    def __init__(self, warehouse: Warehouse | None, table: str, day: date, console: Console):
        self.warehouse, self.table, self.batch, self.rows = warehouse, table, [], 0
        self.written = 0
        self.enabled = warehouse is not None and not self._day_has_events(day, console)

    def _day_has_events(self, day: date, console: Console) -> bool:
        existing = self.warehouse.query_one(
            f"SELECT count() FROM {self.warehouse.table(self.table)} "
            "WHERE toDate(occurred_at) = {day:Date}",
            {"day": day},
        )
        if existing:
            console.print(f"{day}: {existing:,} cache events already present; not adding more")
        return bool(existing)

    def add(self, table: pa.Table) -> None:
        if not self.enabled:
            return
        self.batch.append(table)
        self.rows += table.num_rows
        if self.rows >= EVENT_BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.enabled and self.batch:
            self.warehouse.insert_arrow(self.table, pa.concat_tables(self.batch))
            self.written += self.rows
        self.batch, self.rows = [], 0


def _write_truth(folder: Path, result: StreamResult, include_late: bool) -> None:
    day_dir = folder / f"date={result.day.isoformat()}"
    day_dir.mkdir(parents=True, exist_ok=True)
    result.expected_usage_daily(include_late=include_late).write_csv(day_dir / "usage_daily.csv")
    quarantine = result.quarantine_all if include_late else result.quarantine_on_time
    summary = {
        "day": result.day.isoformat(),
        "includes_late_files": include_late,
        "rollup_cells": result.rows,
        "rows_written": result.rows_written,
        "objects": result.files,
        "objects_delivered": result.delivered,
        "cache_events": result.cache_events,
        "faults": dict(Counter({str(k): v for k, v in result.faults.items()})),
        "expected_quarantine": {str(k): v for k, v in quarantine.items()},
        "conflicting_event_ids": sorted(result.conflicts),
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    (day_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
