"""The day audits of `audit.py` for a range of days at once: what a range run's checks read.

A backfill's single run checks every day of its range. Asking once per day costs a handful of
statements per day; these functions ask once for the whole range, grouped by day, and return
for every day from min(days) to max(days) exactly what the one-day function in `audit.py`
returns for that day (tests/test_range_checks.py compares both on the same warehouse).

- `conflicts_by_day`: the publish's per-hour conflict counts of every day in one statement;
  the listing (`audit.conflicts`) only for the days that have conflicts.
- `quarantine_summaries`: the current quarantine of every day in three statements (counts
  by rule, whole files, row samples): the rows of the latest decision about every object
  version of the day (the ledger's `latest_sql`, one door), and what the day's latest
  publication held back. The one-day `audit.quarantine_summary` is this over one day.

The exactness check (`audit.recompute_day`) stays one day at a time: its recount is bucketed
per day by design.
"""

from __future__ import annotations

from datetime import date, timedelta

from usage_etl.periods import days_between
from usage_etl.usage import audit
from usage_etl.usage.ledger import IN_PERIOD, latest_sql
from usage_etl.warehouse.client import Warehouse


def every_day(days: list[date]) -> list[date]:
    """The days from min(days) to max(days), both included."""
    return days_between(min(days), max(days))


def _period(days: list[date]) -> dict[str, date]:
    """The query parameters of ledger.IN_PERIOD: [start, end)."""
    return {"start": min(days), "end": max(days) + timedelta(days=1)}


def conflicts_by_day(
    warehouse: Warehouse, days: list[date], limit: int = 20
) -> dict[date, audit.Conflicts]:
    published = dict(
        warehouse.query_rows(
            f"SELECT day, sum(conflicts) FROM {warehouse.table('usage_hourly')} "
            f"WHERE {IN_PERIOD} GROUP BY day",
            _period(days),
        )
    )
    return {
        day: audit.conflicts(warehouse, day, limit)
        if published.get(day)
        else audit.Conflicts(day, 0, [])
        for day in every_day(days)
    }


def _current_quarantine_sql(warehouse: Warehouse) -> str:
    """What is quarantined in the counting state of every day of [start, end), each day by its
    own ledger decisions and its own latest publication."""
    decided = latest_sql(warehouse, ("load_id",), per="day, object_key, etag", where=IN_PERIOD)
    return f"""
        FROM {warehouse.table("quarantined_rows")}
        WHERE {IN_PERIOD} AND (
            (day, source_key, source_etag, run_id) IN (
                SELECT day, object_key, etag, load_id FROM ({decided})
            )
            OR (day, run_id) IN (
                SELECT day, argMax(run_id, published_at)
                FROM {warehouse.table("usage_day_publications")}
                WHERE {IN_PERIOD}
                GROUP BY day
            )
        )
    """


def quarantine_summaries(
    warehouse: Warehouse, days: list[date], samples: int = 20
) -> dict[date, audit.QuarantineSummary]:
    params = {**_period(days), "limit": samples}
    source = _current_quarantine_sql(warehouse)
    summaries = {day: audit.QuarantineSummary(day) for day in every_day(days)}
    for day, rule, count in warehouse.query_rows(
        f"SELECT day, toString(rule), count() {source} GROUP BY day, rule", params
    ):
        summaries[day].by_rule[rule] = count
    for row in warehouse.query_dicts(
        f"SELECT day, source_key, toString(rule) AS rule, detail {source} AND scope = 'file' "
        "ORDER BY day, source_key LIMIT 200 BY day",
        params,
    ):
        summaries[row.pop("day")].files.append(row)
    for row in warehouse.query_dicts(
        f"SELECT day, source_key, source_row, toString(rule) AS rule, field, value {source} "
        "AND scope = 'row' ORDER BY day, source_key, source_row LIMIT {limit:UInt32} BY day",
        params,
    ):
        summaries[row.pop("day")].samples.append(row)
    return summaries
