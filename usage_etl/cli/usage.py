"""`usage-etl usage ACCOUNT`: what one account moved, where and on which node.

Totals with the trend against the previous window, a zero-filled series per region, per-node
and per-artifact-kind tables; as rich tables, CSV, JSON, and optionally a PNG chart. Read-only:
it runs no migrations, so a read-only ClickHouse user can use it.

Relative ranges (`7d`) end at the latest day with published data unless an as-of is given
(`--as-of` or USAGE_ETL_AS_OF): after a demo of October, `--range 30d` is October, not the
empty 30 days before today. Tables show bytes in binary units; `--raw` shows exact integers.
"""

from __future__ import annotations

import csv
import difflib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from usage_etl.cli.errors import UserError
from usage_etl.cli.output import Format, count, human_bytes, note, stdout_console
from usage_etl.cli.output import table as new_table
from usage_etl.settings import load_settings, parse_as_of
from usage_etl.usage.read_api import (
    _RELATIVE,
    METRICS,
    Change,
    Granularity,
    Totals,
    UsageQuery,
    UsageReport,
    account_exists,
    known_accounts,
    latest_data_end,
    parse_window,
    usage_report,
)
from usage_etl.warehouse.client import Warehouse, open_warehouse

CSV_COLUMNS = ("section", "bucket", "region", "node_id", "artifact_kind", *METRICS)


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)


def project_filter(value: str) -> str | None:
    """`any` = every project, `none` or empty = traffic without a project, else that project."""
    if value == "any":
        return None
    return "" if value in ("", "none") else value


def usage(
    account: Annotated[str, typer.Argument(help="Account (tenant) id.")],
    project: Annotated[
        str, typer.Option("--project", help="Project id; 'any' (all) or 'none' (no project).")
    ] = "any",
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only this artifact kind (e.g. xcode).")
    ] = None,
    range_: Annotated[
        str,
        typer.Option(
            "--range",
            help="24h, 7d, 30d (ending at the latest published data, or before --as-of) or "
            "FROM..TO.",
        ),
    ] = "7d",
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Also write a PNG chart of the series here.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="ISO-8601 UTC 'now' for relative ranges (default USAGE_ETL_AS_OF, else the "
            "end of the latest published data).",
        ),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Tables show exact byte counts instead of GiB/MiB.")
    ] = False,
    billable: Annotated[
        bool,
        typer.Option(
            "--billable", help="Also: billable vs non-billable per meter of the account's plan."
        ),
    ] = False,
) -> None:
    """Usage of one account: totals and trend, series per region, nodes, artifact kinds."""
    settings = load_settings()
    explicit = _as_of(as_of, "--as-of") or _as_of(settings.as_of, "USAGE_ETL_AS_OF")
    try:
        parse_window(range_, explicit)  # a bad range fails before the warehouse opens
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--range") from None
    with open_warehouse(settings.clickhouse_dsn, settings.database) as warehouse:
        _require_account(warehouse, account)
        now = explicit
        relative = _RELATIVE.match(range_.strip())
        if now is None and relative:
            now = latest_data_end(warehouse, whole_days=relative.group(2) == "d")
            if now is not None:
                note(
                    f"range {range_} ends at the latest published data ({now:%Y-%m-%d %H:%M}Z); "
                    "--as-of picks another end"
                )
        query = UsageQuery(account, parse_window(range_, now), project_filter(project), kind)
        report = usage_report(warehouse, query)
        split = billable_split(warehouse, query, settings) if billable else None
    empty = not any(report.totals.get(m) for m in METRICS)
    if empty:
        note(f"no usage for account {account} in {report.window.label} UTC")
    if fmt is Format.json:
        payload = as_json(report)
        if split is not None:
            payload["billable"] = billable_json(split)
        print(json.dumps(payload, indent=2))
    elif fmt is Format.csv:
        write_csv(report)
        if split is not None:
            write_billable_csv(split)
    elif not empty:
        print_tables(stdout_console(), report, raw=raw)
        if split is not None:
            print_billable(stdout_console(), split)
    if chart is not None:
        from usage_etl.cli.usage_chart import write_chart

        written = write_chart(report, chart)
        note(f"chart written to {written}")


def _as_of(value: str | None, name: str) -> datetime | None:
    try:
        return parse_as_of(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected an ISO-8601 UTC time like 2026-10-31T12:00:00Z, got {value!r}",
            param_hint=name,
        ) from None


def _require_account(warehouse: Warehouse, account: str) -> None:
    if account_exists(warehouse, account):
        return
    close = difflib.get_close_matches(account, known_accounts(warehouse), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (no usage is published for it)"
    raise UserError(f"unknown account {account!r}{hint}")


# -- output -------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _metrics(totals: Totals) -> dict[str, int]:
    return {m: totals.get(m) for m in METRICS}


def as_json(report: UsageReport) -> dict:
    query = report.query

    def window(w) -> dict:
        return {"start": _iso(w.start), "end": _iso(w.end), "granularity": str(w.granularity)}

    return {
        "account_id": query.account_id,
        "project_id": query.project_id,
        "artifact_kind": query.artifact_kind,
        "window": window(report.window),
        "previous_window": window(report.previous_window),
        "totals": _metrics(report.totals),
        "previous_totals": _metrics(report.previous_totals),
        "trend": [_change(c) for c in report.trend()],
        "series": [
            {"bucket": _iso(p.bucket), "region": p.region, **_metrics(p.totals)}
            for p in report.series
        ],
        "nodes": [
            {"node_id": n.node_id, "region": n.region, **_metrics(n.totals)} for n in report.nodes
        ],
        "kinds": [{"artifact_kind": k.artifact_kind, **_metrics(k.totals)} for k in report.kinds],
    }


def _change(change: Change) -> dict:
    percent = None if change.percent is None else str(change.percent)
    return {
        "metric": change.metric,
        "current": change.current,
        "previous": change.previous,
        "change": change.delta,
        "percent": percent,
    }


def write_csv(report: UsageReport) -> None:
    """One long table; `section` says which part a row belongs to."""
    writer = csv.DictWriter(sys.stdout, CSV_COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerow(
        {"section": "total", "bucket": _iso(report.window.start), **_metrics(report.totals)}
    )
    writer.writerow(
        {
            "section": "previous_total",
            "bucket": _iso(report.previous_window.start),
            **_metrics(report.previous_totals),
        }
    )
    for p in report.series:
        row = {"bucket": _iso(p.bucket), "region": p.region, **_metrics(p.totals)}
        writer.writerow({"section": "series", **row})
    for n in report.nodes:
        row = {"node_id": n.node_id, "region": n.region, **_metrics(n.totals)}
        writer.writerow({"section": "node", **row})
    for k in report.kinds:
        writer.writerow({"section": "kind", "artifact_kind": k.artifact_kind, **_metrics(k.totals)})


def _n(value: int) -> str:
    return count(value)


def _cells(totals: Totals, raw: bool) -> list[str]:
    return [
        count(totals.get(m)) if raw or m == "requests" else human_bytes(totals.get(m))
        for m in METRICS
    ]


def _table(title: str, keys: tuple[str, ...]) -> Table:
    return new_table(title, [*((k, False) for k in keys), *((m, True) for m in METRICS)])


def print_tables(console: Console, report: UsageReport, raw: bool = False) -> None:
    query = report.query
    scope = [f"account {query.account_id}", f"{report.window.label} UTC"]
    if query.project_id is not None:
        scope.insert(1, f"project {query.project_id or '(none)'}")
    if query.artifact_kind is not None:
        scope.insert(1, f"kind {query.artifact_kind}")
    columns = ["metric", "current", f"previous ({report.previous_window.label})", "change"]
    trend = new_table(
        "Totals  " + ", ".join(scope),
        [(c, c != "metric") for c in columns] + [("change %", True)],
    )
    for c in report.trend():
        percent = "-" if c.percent is None else f"{c.percent:+,}%"
        if raw or c.metric == "requests":
            values = (_n(c.current), _n(c.previous), f"{c.delta:+,}")
        else:
            sign = "+" if c.delta >= 0 else "-"
            values = (human_bytes(c.current), human_bytes(c.previous),
                      sign + human_bytes(abs(c.delta)))  # fmt: skip
        trend.add_row(c.metric, *values, percent)
    console.print(trend)

    series = _table(f"Per region, by {report.window.granularity}", ("bucket", "region"))
    daily = report.window.granularity is Granularity.day
    for p in report.series:
        bucket = f"{p.bucket:%Y-%m-%d}" if daily else _iso(p.bucket)
        series.add_row(bucket, p.region, *_cells(p.totals, raw))
    nodes = _table("Per node (combined bytes, descending)", ("node_id", "region"))
    for n in report.nodes:
        nodes.add_row(n.node_id, n.region, *_cells(n.totals, raw))
    kinds = _table("Per artifact kind", ("artifact_kind",))
    for k in report.kinds:
        kinds.add_row(k.artifact_kind, *_cells(k.totals, raw))
    for table in (series, nodes, kinds):
        console.print(table if table.row_count else f"{table.title}: no usage")
    if not raw:
        console.print("bytes in binary units (1 GiB = 2^30 bytes); --raw for exact counts")


# -- --billable -----------------------------------------------------------------------------


def billable_split(warehouse, query: UsageQuery, settings):
    from usage_etl.invoicing.price_book import load_price_book
    from usage_etl.usage.read_api import billable_usage

    return billable_usage(warehouse, query, load_price_book(settings.price_book))


def billable_json(split) -> dict:
    from usage_etl.invoicing.exact import exact_text

    return {
        "plan": split.plan,
        "units": split.units,
        "groups": [
            {"by": g.by, "key": g.key,
             "meters": {m: exact_text(q) for m, q in g.meters.items()},
             "unbilled_bytes": g.unbilled_bytes, "unbilled_requests": g.unbilled_requests}
            for g in split.groups
        ],
    }  # fmt: skip


def write_billable_csv(split) -> None:
    """A second CSV block (after a blank line): one row per group and meter."""
    from usage_etl.invoicing.exact import exact_text

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([])
    writer.writerow(["by", "key", "meter", "quantity", "unit", "unbilled_bytes",
                     "unbilled_requests"])  # fmt: skip
    for g in split.groups:
        for meter, quantity in g.meters.items():
            writer.writerow([g.by, g.key, meter, exact_text(quantity), split.units[meter],
                             g.unbilled_bytes, g.unbilled_requests])  # fmt: skip


def print_billable(console: Console, split) -> None:
    from usage_etl.invoicing.exact import exact_text

    for by in ("project_id", "artifact_kind"):
        table = Table(title=f"Billable per {by} (plan {split.plan})", title_justify="left")
        table.add_column(by)
        for meter, unit in split.units.items():
            table.add_column(f"{meter} ({unit})", justify="right")
        table.add_column("not billed: bytes", justify="right")
        table.add_column("requests", justify="right")
        for g in split.of(by):
            table.add_row(
                g.key or "(none)", *(exact_text(q) for q in g.meters.values()),
                _n(g.unbilled_bytes), _n(g.unbilled_requests),
            )  # fmt: skip
        console.print(table if table.row_count else f"{table.title}: no usage")
