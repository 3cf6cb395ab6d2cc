"""Shared machinery of the reliability suite: subprocess runs, independent oracles, test data.

The oracles here are written from the contract, in plain Python, without the pipeline's code:
`expected_daily` dedupes and sums rollups (§1, §4), `expected_charges` prices a month (§3).
The suite compares what the pipeline published with them, exactly.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.reconstruct import build_reconstructable_job
from rollup_files import ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.crash_points import FAULT_ENV
from usage_etl.settings import SAMPLE_PRICE_BOOK
from usage_etl.warehouse.client import Warehouse, open_warehouse

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DAY = date(2026, 10, 5)
DAILY_COLUMNS = (
    "day", "account_id", "project_id", "region", "node_id", "direction", "operation",
    "artifact_kind", "network_path", "bytes", "request_count",
)  # fmt: skip
# A run that must fail fast on a dead S3: one attempt per request instead of boto's five.
ONE_S3_ATTEMPT = {"resources": {"landing": {"config": {"max_attempts": 1}}}}
# Dagster retries transient faults with 5-20 s backoff; tests that provoke one on purpose turn
# retries off so the run fails at the first attempt (the message is the same).
NO_RETRIES = {"execution": {"config": {"retries": {"disabled": {}}}}}


# -- running the pipeline --------------------------------------------------------------------


@dataclass
class Pipeline:
    """One test's pipeline: its settings live in os.environ (see the `pipeline` fixture)."""

    dsn: str
    database: str

    def cli(
        self,
        job: str,
        partition: str,
        *,
        fault: str | None = None,
        env: dict[str, str] | None = None,
        config: dict | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        """`dagster job execute` exactly as an operator types it (contract §6)."""
        process = self.start_cli(job, partition, fault=fault, env=env, config=config)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def start_cli(
        self,
        job: str,
        partition: str,
        *,
        fault: str | None = None,
        env: dict[str, str] | None = None,
        config: dict | None = None,
    ) -> subprocess.Popen:
        run_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        run_env.pop(FAULT_ENV, None)
        if fault:
            run_env[FAULT_ENV] = fault
        args = [DAGSTER, "job", "execute", "-m", "usage_etl.definitions", "-j", job]
        args += ["--tags", json.dumps({"dagster/partition": partition})]
        if config:
            path = Path(run_env["DAGSTER_HOME"]) / f"run-config-{random.getrandbits(32)}.yaml"
            path.write_text(yaml.safe_dump(config))
            args += ["-c", str(path)]
        return subprocess.Popen(
            args, env=run_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    @contextmanager
    def open(self) -> Iterator[Warehouse]:
        """The pipeline's database, opened in this process (and closed: the engine is free)."""
        with open_warehouse(self.dsn, self.database, lock_timeout_seconds=120) as warehouse:
            yield warehouse


def job_for(name: str) -> dg.JobDefinition:
    from usage_etl.definitions import defs

    return defs().resolve_job_def(name)


def run_job(
    job: str, partition: str, *, retries: bool = True, config: dict | None = None, instance=None
):
    """Run a job in this process, as the code location defines it.

    `execute_in_process` always retries (with the assets' 5-20 s backoff); a test that fails a
    run on purpose passes retries=False, which runs the same job through `execute_job` with
    the executor's retries disabled.
    """
    instance = instance or dg.DagsterInstance.ephemeral()
    tags = {"dagster/partition": partition}
    if not retries:
        recon = build_reconstructable_job("reliability_harness", "job_for", (job,))
        run_config = {**NO_RETRIES, **(config or {})}
        return dg.execute_job(recon, instance, run_config=run_config, tags=tags)
    return job_for(job).execute_in_process(
        partition_key=partition, run_config=config, instance=instance, raise_on_error=False
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure of a run: message, cause and stack, as Dagster stored them."""
    parts = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                parts.append(error.to_string())
                error = error.cause
    return "\n".join(parts)


# -- reading what was published ----------------------------------------------------------------


def daily_table(warehouse: Warehouse, day: date = DAY) -> list[tuple]:
    """usage_daily of a day, row by row (contract §4 promises one row per dimension tuple)."""
    return warehouse.query_rows(
        f"SELECT {', '.join(DAILY_COLUMNS)} FROM {warehouse.table('usage_daily')} "
        "WHERE day = {day:Date} ORDER BY ALL",
        {"day": day},
    )


def hourly_rolled_up(warehouse: Warehouse, day: date = DAY) -> list[tuple]:
    """usage_hourly summed to the day: must equal usage_daily whenever a publish completed."""
    dims = ", ".join(DAILY_COLUMNS[:-2])
    return warehouse.query_rows(
        f"SELECT {dims}, sum(bytes), sum(request_count) FROM {warehouse.table('usage_hourly')} "
        "WHERE day = {day:Date} GROUP BY ALL ORDER BY ALL",
        {"day": day},
    )


def count_rows(warehouse: Warehouse, table: str, where: str = "1", params=None) -> int:
    return warehouse.query_one(
        f"SELECT count() FROM {warehouse.table(table)} WHERE {where}", params
    )


# -- the oracles -------------------------------------------------------------------------------

CONTENT = (
    "node_id", "region", "account_id", "project_id", "direction", "operation", "artifact_kind",
    "network_path", "window_start", "window_seconds", "bytes", "request_count",
)  # fmt: skip


def expected_daily(rows: Iterable[dict]) -> list[tuple]:
    """Contract §1/§4 from scratch: latest emitted_at per event_id, summed per day and dims.

    Test data never holds two different versions with equal emitted_at (the contract lets the
    pipeline pick either), so the oracle refuses them rather than guess.
    """
    latest: dict[str, dict] = {}
    for row in rows:
        seen = latest.get(row["event_id"])
        if seen is None or row["emitted_at"] > seen["emitted_at"]:
            latest[row["event_id"]] = row
        elif row["emitted_at"] == seen["emitted_at"]:
            assert [row[c] for c in CONTENT] == [seen[c] for c in CONTENT], row["event_id"]
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for row in latest.values():
        key = (
            row["window_start"].date(), row["account_id"], row["project_id"] or "",
            row["region"], row["node_id"], row["direction"], row["operation"],
            row["artifact_kind"], row["network_path"] or "unknown",
        )  # fmt: skip
        totals[key][0] += row["bytes"]
        totals[key][1] += row["request_count"]
    return sorted(key + tuple(values) for key, values in totals.items())


GIB = 2**30
UNITS = {"GiB": GIB, "1k": 1000}


def _meters(daily: Iterable[tuple]) -> dict[str, dict[str, int]]:
    meters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in daily:
        record = dict(zip(DAILY_COLUMNS, row, strict=True))
        account = meters[record["account_id"]]
        if record["direction"] == "egress" and record["network_path"] != "private_network":
            account["egress_bytes"] += record["bytes"]
        if record["direction"] == "ingress":
            account["ingress_bytes"] += record["bytes"]
        account["requests"] += record["request_count"]
    return meters


def expected_charges(
    daily: Iterable[tuple], book_path: Path = SAMPLE_PRICE_BOOK
) -> dict[tuple[str, str, int], tuple[Decimal, Decimal]]:
    """Contract §3 from scratch: (account, meter, tier) -> (quantity, amount), positive only."""
    book = yaml.safe_load(book_path.read_text())
    charges = {}
    for account, meters in _meters(daily).items():
        plan = book["plans"][book.get("accounts", {}).get(account, book["default_plan"])]
        for meter, raw in meters.items():
            quantity = Fraction(raw, UNITS[plan[meter]["unit"]])
            lower = Fraction(0)
            for tier, spec in enumerate(plan[meter]["tiers"], start=1):
                upper = None if spec["up_to"] is None else Fraction(spec["up_to"])
                part = max(
                    Fraction(0), (quantity if upper is None else min(quantity, upper)) - lower
                )
                if part > 0:
                    charges[(account, meter, tier)] = (
                        _half_up(part, 9),
                        _half_up(part * Fraction(Decimal(spec["unit_price"])), 2),
                    )
                if upper is None or quantity <= upper:
                    break
                lower = upper
    return charges


def _half_up(value: Fraction, places: int) -> Decimal:
    exact = Decimal(value.numerator) / Decimal(value.denominator)  # 28 digits: plenty here
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def stored_charges(lines: Iterable[dict]) -> dict[tuple[str, str, int], tuple[Decimal, Decimal]]:
    return {
        (line["account_id"], line["meter"], line["tier"]): (line["quantity"], line["amount"])
        for line in lines
        if line["kind"] == "usage"
    }


# -- test data ---------------------------------------------------------------------------------


@dataclass
class RollupFile:
    name: str
    hour: int
    node: str
    rows: list[dict]
    invalid: list[dict] = field(default_factory=list)  # rows that break a rule on purpose

    def body(self) -> bytes:
        rows = self.rows + self.invalid
        return parquet_bytes(rows) if self.name.endswith(".parquet") else ndjson_gz_bytes(rows)


CELLS = [(hour, node) for hour in (1, 2, 3) for node in ("node-a", "node-b")]
ACCOUNTS = ("acme", "beta", "gamma")


def _cell_rows(
    rng: random.Random, tag: str, hour: int, node: str, count: int, day: date
) -> list[dict]:
    return [
        rollup(
            f"{tag}-{day}-{hour}-{node}-{i}",
            day=day,
            hour=hour,
            node_id=node,
            minute=i % 60,
            account_id=rng.choice(ACCOUNTS),
            project_id=rng.choice(("p1", "p2", None)),
            direction=rng.choice(("egress", "ingress")),
            network_path=rng.choice(("public_internet", "private_network", None)),
            bytes=rng.randrange(1, 5 * GIB),
            request_count=rng.randrange(0, 50_000),
            emitted_minute=rng.randrange(0, 30),
        )
        for i in range(count)
    ]


def first_delivery(seed: int = 1, rows_per_file: int = 12, day: date = DAY) -> list[RollupFile]:
    """The day as first published: three files, one per cell, both formats."""
    rng = random.Random(seed)
    formats = ("parquet", "ndjson.gz", "parquet")
    return [
        RollupFile(f"A-{h}-{n}.{fmt}", h, n, _cell_rows(rng, "A", h, n, rows_per_file, day))
        for (h, n), fmt in zip(CELLS[:3], formats, strict=True)
    ]


def late_delivery(
    first: list[RollupFile], seed: int = 2, rows_per_file: int = 8, day: date = DAY
) -> list[RollupFile]:
    """Late files of the same day: new rollups, corrections (later emitted_at) and identical
    re-deliveries of first-delivery rollups, and a few rows that break a rule."""
    rng = random.Random(seed)
    earlier = {(f.hour, f.node): f.rows for f in first}
    files = []
    for index, (hour, node) in enumerate(CELLS):
        rows = _cell_rows(rng, "B", hour, node, rows_per_file, day)
        old = earlier.get((hour, node), [])
        for original in old[:2]:  # corrected versions
            rows.append({**original, "bytes": original["bytes"] + rng.randrange(1, GIB),
                         "emitted_at": original["emitted_at"].replace(minute=45)})  # fmt: skip
        rows += [dict(r) for r in old[2:4]]  # identical re-deliveries
        invalid = [rollup(f"bad-{hour}-{node}", day=day, hour=hour, node_id=node, bytes=-1)]
        fmt = "parquet" if index % 2 else "ndjson.gz"
        files.append(RollupFile(f"B-{hour}-{node}.{fmt}", hour, node, rows, invalid))
    return files


def upload(landing, files: Iterable[RollupFile], day: date = DAY) -> None:
    for f in files:
        landing.put(f.name, f.body(), day=day, hour=f.hour, node=f.node)


def valid_rows(files: Iterable[RollupFile]) -> list[dict]:
    return [row for f in files for row in f.rows]
