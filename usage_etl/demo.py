"""The end-to-end demo behind the README's `# main job` command.

Starts SeaweedFS on loopback (and leaves it running, so the README's commands work afterwards),
simulates a month (or its first `--days` days) of a realistic fleet with faults (re-deliveries,
corrections, late and broken files, stray objects, silent node-hours, dropped cache events) plus
the application's cache events, runs `daily_usage` for every day and `monthly_invoices` for the
month on the repo's Dagster instance and embedded ClickHouse, and prints a summary: usage,
which checks failed or warned on how many days and which injected fault each one reveals, and
the invoices.

The terminal shows progress bars; Dagster's own event log goes to `dagster_home/demo.log`. Runs
carry the same tags as scheduled runs (`usage_etl/day`, `usage_etl/month`), with trigger
`demo`. `dagster_home/demo.env` holds every setting the demo used (S3 endpoint and keys, bucket,
DSN, price book, first partition day): `source dagster_home/demo.env` and the README's commands
run on the demo's data. Re-running is safe: the same seed writes the same objects, which the
ledger skips.
"""

from __future__ import annotations

import calendar
import logging
import os
import shlex
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from usage_etl.automation.tags import day_tags, month_tags
from usage_etl.instance import prepare_instance
from usage_etl.invoicing.price_book import load_price_book
from usage_etl.local_stack import SeaweedS3, start_seaweed
from usage_etl.periods import Period
from usage_etl.settings import REPO_ROOT, Settings, dagster_home
from usage_etl.simulator import FaultSpec, FleetSpec, Simulator, date_range
from usage_etl.warehouse.client import open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

DEMO_S3_PORT = 18333  # fixed so `scripts/dev.sh` finds the same endpoint for the UI
DEMO_TRIGGER = "demo"
DEMO_ENV = "demo.env"
DEMO_LOG = "demo.log"
DEMO_ACCESS_KEY = "usage-etl-dev"
DEMO_SECRET_KEY = "usage-etl-dev-secret"

# Which injected fault (usage_etl/simulator/spec.py) each check reveals when it fails.
CHECK_REASONS = {
    "rollups_cover_cache_events": "silent node-hours (silent_rate) and quarantined files leave "
    "rollups below the cache events; dropped cache events (cache_event_drop_rate) leave them "
    "above",
    "node_hours_complete": "silent node-hours (silent_rate) and unreadable files (truncated_rate,"
    " missing_column_rate) leave node-hours without a loaded rollup file",
    "quarantine_report": "truncated files, files missing a column and rows breaking one rule "
    "(truncated_rate, missing_column_rate, bad_row_rate) are quarantined",
    "conflict_report": "twins of one event_id with the same emitted_at and other bytes "
    "(conflict_rate)",
    "usage_daily_is_exact": "no fault should cause this: a bug, report it",
    "credits_within_grants": "no fault should cause this: a bug, report it",
    "meters_disjoint": "the price book lets two meters of one plan count the same usage row: "
    "review their `where` conditions (`usage-etl price-book check` lists the pairs)",
}


def demo_dir() -> Path:
    """The demo's SeaweedFS data, next to the Dagster instance (`.demo/` for the repo's)."""
    return dagster_home().parent / ".demo"


# The demo bills with a v2 price book (defined meters, fees, a minimum, a credit, a plan change).
DEMO_PRICE_BOOK = REPO_ROOT / "config" / "price_book.demo.yaml"


@dataclass(frozen=True)
class DemoOptions:
    month: str = "2026-10"
    nodes: int = 8
    accounts: int = 40
    rows_per_day: int = 20_000
    seed: int = 7
    days: int | None = None  # only N days of the month, from start_day
    start_day: int = 1
    s3_port: int = DEMO_S3_PORT
    export_dir: Path | None = None  # default: dagster_home/exports


def month_days(month: str, limit: int | None = None, start_day: int = 1) -> list[date]:
    """The month's days from `start_day`, at most `limit` of them."""
    year, number = (int(p) for p in month.split("-"))
    last = calendar.monthrange(year, number)[1]
    if not 1 <= start_day <= last:
        raise ValueError(f"--start-day must be 1..{last} for {month}, got {start_day}")
    days = date_range(date(year, number, start_day), date(year, number, last))
    return days[:limit] if limit else days


# -- SeaweedFS that outlives the demo ------------------------------------------------------------


def running_demo_s3(port: int) -> SeaweedS3 | None:
    """The demo's SeaweedFS if one already answers on `port` with the demo's keys."""
    pid_file = demo_dir() / "seaweedfs" / "weed.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, OSError):
        return None
    server = SeaweedS3(
        f"http://127.0.0.1:{port}",
        DEMO_ACCESS_KEY,
        DEMO_SECRET_KEY,
        None,
        demo_dir(),  # type: ignore[arg-type]
    )
    try:
        server.client().list_buckets()
    except Exception:
        return None
    return server


def ensure_demo_s3(port: int = DEMO_S3_PORT) -> tuple[SeaweedS3, bool]:
    """(server, started): reuse the demo's SeaweedFS or start one that keeps running."""
    found = running_demo_s3(port)
    if found is not None:
        return found, False
    folder = demo_dir() / "seaweedfs"
    server = start_seaweed(folder, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, s3_port=port)
    (folder / "weed.pid").write_text(f"{server.process.pid}\n")
    return server, True


# -- the settings file ---------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """`export KEY=value` lines (as `write_env_file` writes them) back into a dict."""
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, _, value = line.removeprefix("export ").partition("=")
                parsed = shlex.split(value)
                values[key] = parsed[0] if parsed else ""
    return values


def demo_env(s3: SeaweedS3, settings: Settings, first_day: date) -> dict[str, str]:
    return {
        "DAGSTER_HOME": str(dagster_home()),
        **s3.env(),
        "USAGE_ETL_LANDING_URL": settings.landing_url,
        "USAGE_ETL_CLICKHOUSE_DSN": settings.clickhouse_dsn,
        "USAGE_ETL_DATABASE": settings.database,
        "USAGE_ETL_PRICE_BOOK": str(Path(settings.price_book).resolve()),
        "USAGE_ETL_FIRST_DAY": first_day.isoformat(),
    }


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Shell `export` lines; the demo's keys are SeaweedFS's local dev keys, not secrets."""
    venv_bin = REPO_ROOT / ".venv" / "bin"
    lines = [
        "# Written by `usage-etl demo`: the settings of the demo's run.",
        "# `source dagster_home/demo.env`, then the README's commands use the demo's data.",
        *(f"export {key}={shlex.quote(value)}" for key, value in values.items()),
        f'export PATH={shlex.quote(str(venv_bin))}:"$PATH"',
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def demo_first_day(days: list[date]) -> date:
    """The demo's first day, or an earlier one from a previous demo in the same instance."""
    previous = read_env_file(dagster_home() / DEMO_ENV).get("USAGE_ETL_FIRST_DAY")
    try:
        return min(days[0], date.fromisoformat(previous)) if previous else days[0]
    except ValueError:
        return days[0]


# -- Dagster's log to a file ---------------------------------------------------------------------


@dg.logger(
    config_schema={"path": dg.Field(str), "log_level": dg.Field(str, default_value="DEBUG")},
    description="Dagster's event log of the demo's runs, to a file instead of the terminal.",
)
def _file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger("usage_etl.demo.dagster")
    logger.setLevel(init_context.logger_config["log_level"])
    logger.propagate = False
    path = init_context.logger_config["path"]
    if not any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _quiet_python_logs(path: Path) -> logging.Handler:
    """Library loggers and warnings (dagster's own, PreviewWarning…) go to the same file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    for name in ("dagster", "py.warnings", "usage_etl"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    return handler


# -- the run -------------------------------------------------------------------------------------


@dataclass
class CheckTally:
    asset: str
    name: str
    days: int = 0
    error: int = 0
    warn: int = 0


def run_demo(options: DemoOptions, console: Console | None = None) -> None:
    # Piped (a log, a CI job): a fixed width, not 80 columns of wrapped tables.
    console = console or (Console() if sys.stdout.isatty() else Console(width=160))
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("USAGE_ETL_PRICE_BOOK", str(DEMO_PRICE_BOOK))
    load_price_book(Settings().price_book)  # a missing or broken price book fails first
    prepare_instance(home)  # before any run: two first runs must not both create its tables
    days = month_days(options.month, options.days, options.start_day)
    first_day = demo_first_day(days)
    # Read when the definitions load (below): the partitions start at the demo's first day.
    os.environ["USAGE_ETL_FIRST_DAY"] = first_day.isoformat()
    log_path = home / DEMO_LOG
    _quiet_python_logs(log_path)
    s3, started = ensure_demo_s3(options.s3_port)
    os.environ.update(s3.env())
    settings = Settings()
    s3.ensure_bucket(settings.landing_bucket)
    env_path = home / DEMO_ENV
    write_env_file(env_path, demo_env(s3, settings, first_day))
    console.print(
        f"[bold]SeaweedFS[/] S3 at {s3.endpoint} ({'started' if started else 'already running'})"
        f"; landing {settings.landing_url}; warehouse "
        f"{settings.describe()['clickhouse_dsn']} (database {settings.database})",
        highlight=False,
    )
    console.print(f"Dagster's event log: {log_path}", highlight=False)
    tallies: dict[tuple[str, str], CheckTally] = {}
    with _progress(console) as progress:
        _simulate(options, days, s3, settings, progress)
        instance = dg.DagsterInstance.get()
        _run_days(days, instance, progress, log_path, tallies)
        _run_invoices(options.month, instance, progress, log_path, tallies)
        export_dir = (options.export_dir or home / "exports").resolve()
        written = _export(settings, options.month, export_dir)
    _summary(settings, days, options.month, console, tallies)
    console.print(
        f"\n[bold]Exports[/] {options.month}: {written.parent} (CSV, Parquet, manifest.json), "
        f"also in S3 under {settings.landing_bucket}/exports/invoices/",
        highlight=False,
    )
    console.print(
        f"[bold]Settings[/]: {env_path} — `source {_shown(env_path)}` and the README's "
        "commands (Running it) use this data.\n"
        f"SeaweedFS keeps running for them (pid in {_shown(demo_dir() / 'seaweedfs' / 'weed.pid')}"
        "; `kill $(cat …)` stops it).\n"
        "[bold]Open the Dagster UI[/] on this data: [cyan]bash scripts/dev.sh[/] "
        "(then browse http://127.0.0.1:3000; runs: filter tag:usage_etl/trigger=demo).",
        highlight=False,
    )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
        console=console,
    )  # fmt: skip


def _simulate(options: DemoOptions, days: list[date], s3, settings: Settings, progress) -> None:
    sim = Simulator(
        FleetSpec(
            nodes=options.nodes, accounts=options.accounts,
            rows_per_day=options.rows_per_day, seed=options.seed,
        ),
        FaultSpec.default(),
    )  # fmt: skip
    client = s3.client()
    files = events = 0
    task = progress.add_task("simulate fleet", total=len(days), unit="days", note="")
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        apply_migrations(warehouse, DdlOptions.from_settings(settings))
        already = warehouse.query_one(
            f"SELECT count() FROM {warehouse.table(settings.cache_events_table)} "
            "WHERE toDate(occurred_at) BETWEEN {first:Date} AND {last:Date}",
            {"first": days[0], "last": days[-1]},
        )
        for day in days:
            sim_day = sim.generate_day(day)
            files += sim.upload(
                sim_day.files, client, settings.landing_bucket, settings.landing_prefix,
                include_late=True,
            )  # fmt: skip
            if not already:  # cache events are not idempotent inserts: write them once
                events += sim.write_cache_events(warehouse, sim_day, settings.cache_events_table)
            progress.update(task, advance=1, note=f"{files:,} objects, {events:,} cache events")


def _logged(job: dg.JobDefinition) -> dg.JobDefinition:
    return job.with_logger_defs({"file": _file_logger})


def _log_config(log_path: Path) -> dict:
    return {"loggers": {"file": {"config": {"path": str(log_path)}}}}


def _tally(result, tallies: dict[tuple[str, str], CheckTally]) -> None:
    for evaluation in result.get_asset_check_evaluations():
        asset = evaluation.asset_key.to_user_string()
        tally = tallies.setdefault(
            (asset, evaluation.check_name), CheckTally(asset, evaluation.check_name)
        )
        tally.days += 1
        if not evaluation.passed:
            if evaluation.severity == dg.AssetCheckSeverity.ERROR:
                tally.error += 1
            else:
                tally.warn += 1


def _run_days(days, instance, progress, log_path: Path, tallies) -> None:
    from usage_etl.definitions import defs
    from usage_etl.defs.vocabulary import DAILY_USAGE_JOB

    job = _logged(defs().resolve_job_def(DAILY_USAGE_JOB))
    task = progress.add_task("daily_usage", total=len(days), unit="days", note="")
    for day in days:
        progress.update(task, note=f"running {day}")
        result = job.execute_in_process(
            partition_key=day.isoformat(), instance=instance, raise_on_error=False,
            tags=day_tags(day, DEMO_TRIGGER), run_config=_log_config(log_path),
        )  # fmt: skip
        if not result.success:
            raise SystemExit(
                f"daily_usage failed for {day} (run {result.run_id}): see {log_path} or the run "
                "in the Dagster UI"
            )
        _tally(result, tallies)
        progress.update(task, advance=1, note=f"{day} published")
        if not progress.console.is_terminal:  # a log file or CI: no live bars, one line a day
            progress.console.print(f"daily_usage {day} published", highlight=False)


def _run_invoices(month: str, instance, progress, log_path: Path, tallies) -> None:
    from usage_etl.definitions import defs
    from usage_etl.defs.vocabulary import MONTHLY_INVOICES_JOB

    job = _logged(defs().resolve_job_def(MONTHLY_INVOICES_JOB))
    task = progress.add_task("monthly_invoices", total=1, unit="month", note=f"pricing {month}")
    result = job.execute_in_process(
        partition_key=f"{month}-01", instance=instance, raise_on_error=False,
        tags=month_tags(Period.parse(month), DEMO_TRIGGER), run_config=_log_config(log_path),
    )  # fmt: skip
    if not result.success:
        raise SystemExit(
            f"monthly_invoices failed for {month} (run {result.run_id}): see {log_path} or the "
            "run in the Dagster UI"
        )
    _tally(result, tallies)
    progress.update(task, advance=1, note=f"{month} priced and exported")


def _export(settings: Settings, month: str, folder: Path) -> Path:
    from usage_etl.cli.invoices import export_to_folder

    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        written = export_to_folder(warehouse, Period.parse(month), folder)
    return written[-1]


# -- the summary ---------------------------------------------------------------------------------


def _summary(settings: Settings, days: list[date], month: str, console: Console, tallies) -> None:
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        params = {"first": days[0], "last": days[-1], "period": date.fromisoformat(f"{month}-01")}
        loads = warehouse.query_dicts(
            f"""
            SELECT sum(r) AS rows, sum(d) AS duplicates, sum(c) AS conflicts,
                   sum(ol) AS objects_loaded, sum(oq) AS objects_quarantined,
                   sum(oi) AS objects_ignored
            FROM (
                SELECT day,
                       argMax(rows_loaded, published_at) AS r,
                       argMax(duplicates, published_at) AS d,
                       argMax(conflicts, published_at) AS c,
                       argMax(objects_loaded, published_at) AS ol,
                       argMax(objects_quarantined, published_at) AS oq,
                       argMax(objects_ignored, published_at) AS oi
                FROM {warehouse.table("usage_day_publications")}
                WHERE day BETWEEN {{first:Date}} AND {{last:Date}}
                GROUP BY day
            )
            """,
            params,
        )[0]
        quarantined = warehouse.query_one(
            f"SELECT count() FROM {warehouse.table('quarantined_rows')} "
            "WHERE day BETWEEN {first:Date} AND {last:Date}",
            params,
        )
        invoices = warehouse.query_dicts(
            f"SELECT account_id, status, currency, subtotal FROM {warehouse.table('invoices')} "
            "WHERE period_start = {period:Date} ORDER BY subtotal DESC, account_id",
            params,
        )
        contract_lines = warehouse.query_dicts(
            f"""
            SELECT kind, meter, reference, groupUniqArray(plan) AS plans,
                   count() AS lines, groupUniqArray(account_id) AS accounts,
                   sum(amount) AS amount, any(currency) AS currency
            FROM {warehouse.table("invoice_line_items")}
            WHERE period_start = {{period:Date}} AND (kind IN ('fixed', 'minimum', 'credit')
                  OR meter NOT IN ('egress_bytes', 'ingress_bytes', 'requests'))
            GROUP BY kind, meter, reference ORDER BY kind, meter, reference
            """,
            params,
        )
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0])
    console.print(
        f"\n[bold]Usage {span}[/]: {loads['rows']:,} rollup rows staged from "
        f"{loads['objects_loaded']:,} objects; {loads['duplicates']:,} duplicates removed; "
        f"{loads['conflicts']:,} conflicts; {loads['objects_quarantined']:,} objects and "
        f"{quarantined:,} quarantine records; {loads['objects_ignored']:,} stray objects ignored.",
        highlight=False,
    )
    print_checks(console, tallies)
    print_contract_lines(console, contract_lines, month)
    table = Table(title=f"Invoices {month}", title_justify="left")
    for column in ("account", "status", "subtotal"):
        table.add_column(column, justify="right" if column == "subtotal" else "left")
    for row in invoices[:15]:
        table.add_row(row["account_id"], row["status"], f"{row['subtotal']} {row['currency']}")
    console.print(table)
    totals: Counter = Counter()
    for row in invoices:
        totals[row["currency"]] += row["subtotal"]
    total = ", ".join(f"{amount} {cur}" for cur, amount in sorted(totals.items())) or Decimal(0)
    shown = " (top 15 shown)" if len(invoices) > 15 else ""
    console.print(f"{len(invoices)} invoices, total {total}{shown}", highlight=False)


def print_contract_lines(console: Console, rows: list[dict], month: str) -> None:
    """What the price book's v2 terms billed: defined meters, fixed fees, true-ups, credits."""
    if not rows:
        return
    table = Table(title=f"Price book v2 lines {month}", title_justify="left")
    for column in ("kind", "meter / grant", "plans", "accounts", "lines", "amount"):
        table.add_column(column, justify="right" if column in ("lines", "amount") else "left")
    for row in rows:
        accounts = sorted(row["accounts"])
        shown = ", ".join(accounts[:3]) + (f" +{len(accounts) - 3}" if len(accounts) > 3 else "")
        table.add_row(
            row["kind"], row["meter"] or row["reference"] or "-", ", ".join(sorted(row["plans"])),
            shown, str(row["lines"]), f"{row['amount']} {row['currency']}",
        )  # fmt: skip
    console.print(table)


def print_checks(console: Console, tallies: dict[tuple[str, str], CheckTally]) -> None:
    failing = [t for t in tallies.values() if t.error or t.warn]
    failing.sort(key=lambda t: (-t.error, -t.warn, t.asset, t.name))
    table = Table(title="Checks that failed or warned", title_justify="left", title_style="bold")
    for column in ("check", "severity", "days", "what it reveals"):
        table.add_column(column, overflow="fold")
    for t in failing:
        severity = "ERROR" if t.error else "WARN"
        if t.error and t.warn:
            severity = f"ERROR {t.error}, WARN {t.warn}"
        reason = CHECK_REASONS.get(t.name, "see the check's description in the Dagster UI")
        table.add_row(f"{t.asset}: {t.name}", severity, f"{t.error + t.warn} of {t.days}", reason)
    console.print()
    if failing:
        console.print(table)
    passed = sorted(f"{t.name}" for t in tallies.values() if not (t.error or t.warn))
    if passed:
        console.print(f"passed on every run: {', '.join(passed)}", highlight=False)
    console.print(
        "A failing check here is the simulator's injected faults being caught, not a demo bug; "
        "details: the asset's Checks tab in the Dagster UI, docs/operations.md.\n",
        highlight=False,
    )
