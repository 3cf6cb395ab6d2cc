"""Is a period's usage complete enough to finalize its invoices?

A day is complete when it has no usage to ingest (no rollup object in S3, none in the ledger),
or when `daily_usage` has published it at least once, its last publication
is newer than anything the object ledger recorded for it (a run that read files but died
before publishing leaves the day stale), and every rollup object now under the day's prefix in
S3 is the one the ledger last decided about (same key, same ETag). An object missing from the
ledger arrived after the day's last run; one with another ETag was overwritten since. Either
way the day must be re-run before billing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from usage_etl.invoicing.store import published_days
from usage_etl.landing import Landing
from usage_etl.periods import Period
from usage_etl.usage.ledger import current_etags, days_with_entries, last_recorded_sql
from usage_etl.warehouse.client import Warehouse


@dataclass(frozen=True)
class Completeness:
    unpublished_days: list[date]
    late_objects: dict[date, list[str]] = field(default_factory=dict)
    stale_days: list[date] = field(default_factory=list)  # ledger newer than the publication

    @property
    def incomplete_days(self) -> list[date]:
        return sorted(set(self.unpublished_days) | set(self.late_objects) | set(self.stale_days))

    @property
    def complete(self) -> bool:
        return not self.incomplete_days

    def describe(self) -> str:
        parts = []
        if self.unpublished_days:
            parts.append(
                "never materialized by daily_usage: "
                + ", ".join(d.isoformat() for d in self.unpublished_days)
            )
        if self.stale_days:
            parts.append(
                "files read after the last publication: "
                + ", ".join(d.isoformat() for d in self.stale_days)
            )
        if self.late_objects:
            parts.append(
                "files not ingested since they arrived or changed: "
                + ", ".join(f"{d} ({len(keys)})" for d, keys in sorted(self.late_objects.items()))
            )
        return "; ".join(parts) or "complete"


def _normalize_etag(etag: str) -> str:
    return etag.strip().strip('"')


def ledger_etags(warehouse: Warehouse, period: Period) -> dict[str, str]:
    """The current ETag the ledger holds for each object key of the period."""
    return {key: _normalize_etag(etag) for key, etag in current_etags(warehouse, period).items()}


def _scan(
    warehouse: Warehouse, landing: Landing, period: Period
) -> tuple[dict[date, list[str]], set[date]]:
    """(late objects per day, days that have rollup objects at all)."""
    ledger = ledger_etags(warehouse, period)
    late: dict[date, list[str]] = {}
    days_with_objects: set[date] = set()
    for obj in landing.rollups_of_period(period):
        day = obj.kind.day  # type: ignore[union-attr]
        days_with_objects.add(day)
        # The ledger may hold the full key or the key relative to the landing prefix.
        known = ledger.get(obj.key) or ledger.get(landing.relative(obj.key))
        if known != _normalize_etag(obj.etag):
            late.setdefault(day, []).append(obj.key)
    return late, days_with_objects


def stale_days(warehouse: Warehouse, period: Period) -> list[date]:
    """Days whose ledger has entries newer than the day's last publication."""
    rows = warehouse.query_rows(
        f"""
        SELECT l.day FROM ({last_recorded_sql(warehouse)}) AS l
        INNER JOIN
        (
            SELECT day, max(published_at) AS published
            FROM {warehouse.table("usage_day_publications")}
            WHERE day >= {{start:Date}} AND day < {{end:Date}} GROUP BY day
        ) AS p ON l.day = p.day
        WHERE l.recorded > p.published
        ORDER BY l.day
        """,
        {"start": period.start, "end": period.end},
    )
    return [r[0] for r in rows]


def check_completeness(warehouse: Warehouse, landing: Landing, period: Period) -> Completeness:
    published = published_days(warehouse, period)
    late, days_with_objects = _scan(warehouse, landing, period)
    # A day with no rollup object anywhere has nothing to bill: not materializing it loses
    # nothing. A day with objects (in S3 or the ledger) must have been published.
    has_usage_input = days_with_objects | days_with_entries(warehouse, period)
    return Completeness(
        unpublished_days=[d for d in period.days if d not in published and d in has_usage_input],
        late_objects=late,
        stale_days=stale_days(warehouse, period),
    )
