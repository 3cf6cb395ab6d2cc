"""Audits of a published day, for the day's asset checks (all pushed down to SQL). They change
nothing: the one table they write is `recompute_day`'s work table, dropped before it returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

from usage_etl.usage.dedupe import CONTENT_HASH, LATEST_VERSION_FIRST
from usage_etl.usage.ledger import counting_rows_sql
from usage_etl.usage.publish import GROUP_SUM_OVERFLOW, dedupe_buckets
from usage_etl.warehouse.build_tables import BUILD_PREFIX, drop_build_tables
from usage_etl.warehouse.client import Warehouse


@dataclass(frozen=True)
class Recomputation:
    published: tuple[int, int, int]  # bytes, requests, rollups (+ those quarantined as overflow)
    recomputed: tuple[int, int, int]  # the rollups recomputed = the day's distinct event_ids

    @property
    def matches(self) -> bool:
        return self.published == self.recomputed

    def metadata(self) -> dict:
        return {
            "published_bytes": self.published[0],
            "recomputed_bytes": self.recomputed[0],
            "published_requests": self.published[1],
            "recomputed_requests": self.recomputed[1],
            "published_rollups": self.published[2],
            "recomputed_rollups": self.recomputed[2],
        }


# A version's emitted_at (sign bit flipped: Int64 order as unsigned), bytes and request_count
# as one UInt256, the time most significant; `_EARLIEST_FIRST` inverts the time only. Per
# event_id, max of the first is the latest version with the greatest (bytes, request_count),
# min of the second the latest with the smallest: equal low 128 bits mean every latest version
# bills the same values, so the winner's values are known without the content hash. (toUIntN
# of a UInt256 keeps its low N bits.)
_EMITTED = "bitXor(reinterpretAsUInt64(toUnixTimestamp64Micro(emitted_at)), 9223372036854775808)"
_VALUES = "bitOr(bitShiftLeft(toUInt256(bytes), 64), toUInt256(request_count))"
_LATEST_VALUES = f"bitOr(bitShiftLeft(toUInt256({_EMITTED}), 128), {_VALUES})"
_LATEST_VALUES_LOW = f"bitOr(bitShiftLeft(toUInt256(bitNot({_EMITTED})), 128), {_VALUES})"


def recompute_day(warehouse: Warehouse, day: date) -> Recomputation:
    """The day's totals recomputed from the staged rows, independently of the publish's SQL.

    An event_id whose hash occurs once among the counting rows has one version: its row counts
    as it is. The others are recomputed per event_id from their versions' (emitted_at, bytes,
    request_count) alone (`_LATEST_VALUES`): when every version at the latest emitted_at bills
    the same values, those are the winner's whatever the content hash says. Only event_ids
    whose latest versions bill different values (conflicts) are resolved by sorting their
    versions (ORDER BY event_id, emitted_at DESC, content_hash DESC LIMIT 1 BY event_id). The
    publish instead takes an argMax by the packed (emitted_at, content hash) of every repeated
    event_id. Buckets of event_hash keep the memory flat, as in the publish. Sums stay in
    UInt128 (Python ints). A bucket's repeated hashes are stored first, in a Memory work table:
    named twice as a subquery (IN and NOT IN), the set was built twice (10% duplicated rows of
    11M: 2.6-3.3 s of recomputation against 1.9-2.6 s, docs/performance.md, session 14).

    The published side is what usage_daily holds plus the rollups the latest publication
    quarantined as `group_sum_overflow` (their staged rows' values): every winning rollup must
    be in exactly one of the two.
    """
    repeated_hashes = f"{BUILD_PREFIX}audit_repeated_{uuid.uuid4().hex[:16]}"
    try:
        totals = _recompute_winners(warehouse, day, repeated_hashes)
    finally:
        drop_build_tables(warehouse, repeated_hashes)
    return _published(warehouse, day, totals)


def _recompute_winners(warehouse: Warehouse, day: date, repeated_hashes: str) -> list[int]:
    """(bytes, request_count, event_ids) of the day's winning versions (`recompute_day`), the
    repeated hashes of each bucket stored in the table `repeated_hashes` in turn."""
    params = {"day": day}
    buckets = dedupe_buckets(warehouse, day)
    rows = counting_rows_sql(warehouse)
    totals = [0, 0, 0]
    for bucket in range(buckets):
        bucket_params = {**params, "buckets": buckets, "bucket": bucket}
        in_bucket = f"""
            SELECT * FROM ({rows}) WHERE event_hash % {{buckets:UInt32}} = {{bucket:UInt32}}
        """
        warehouse.command(
            f"""
            CREATE OR REPLACE TABLE {warehouse.table(repeated_hashes)} ENGINE = Memory AS
            SELECT event_hash FROM ({in_bucket}) GROUP BY event_hash HAVING count() > 1
            """,
            bucket_params,
        )
        repeated = f"SELECT event_hash FROM {warehouse.table(repeated_hashes)}"
        per_event = f"""
            SELECT event_id, max({_LATEST_VALUES}) AS hi, min({_LATEST_VALUES_LOW}) AS lo,
                   toUInt128(hi) = toUInt128(lo) AS decided
            FROM ({in_bucket}) WHERE event_hash IN ({repeated})
            GROUP BY event_id
        """
        row = warehouse.query_rows(
            f"""
            SELECT sum(toUInt128(b)), sum(toUInt128(r)), count(), countIf(NOT decided)
            FROM (
                SELECT bytes AS b, request_count AS r, 1 AS decided FROM ({in_bucket})
                WHERE event_hash NOT IN ({repeated})
                UNION ALL
                SELECT if(decided, toUInt64(bitShiftRight(hi, 64)), 0),
                       if(decided, toUInt64(hi), 0), decided
                FROM ({per_event})
            )
            """,
            bucket_params,
        )[0]
        totals = [t + int(v or 0) for t, v in zip(totals, row[:3], strict=True)]
        if row[3]:
            conflicting = f"SELECT event_id FROM ({per_event}) WHERE NOT decided"
            exact = warehouse.query_rows(
                f"""
                SELECT sum(toUInt128(bytes)), sum(toUInt128(request_count)) FROM (
                    SELECT bytes, request_count FROM ({in_bucket})
                    WHERE event_hash IN ({repeated}) AND event_id IN ({conflicting})
                    ORDER BY event_id, {LATEST_VERSION_FIRST}
                    LIMIT 1 BY event_id
                )
                """,
                bucket_params,
            )[0]
            totals = [totals[0] + int(exact[0] or 0), totals[1] + int(exact[1] or 0), totals[2]]
    return totals


def _published(warehouse: Warehouse, day: date, totals: list[int]) -> Recomputation:
    """The published side of `recompute_day` (usage_daily plus the overflow quarantine), with
    the recomputed `totals`."""
    params = {"day": day}
    rows = counting_rows_sql(warehouse)
    daily = warehouse.query_rows(
        f"SELECT sum(toUInt128(bytes)), sum(toUInt128(request_count)) "
        f"FROM {warehouse.table('usage_daily')} WHERE day = {{day:Date}}",
        params,
    )[0]
    rollups = warehouse.query_one(
        f"SELECT sum(rollups) FROM {warehouse.table('usage_hourly')} WHERE day = {{day:Date}}",
        params,
    )
    held = (0, 0, 0)
    # The staged rows are scanned for them only on a day that has some (rarely any).
    if warehouse.query_one(f"SELECT count() {_overflow_quarantine_sql(warehouse)}", params):
        held = warehouse.query_rows(
            f"""
            SELECT sum(toUInt128(bytes)), sum(toUInt128(request_count)), count()
            FROM ({rows})
            WHERE (source_key, source_etag, source_row) IN (
                SELECT source_key, source_etag, source_row {_overflow_quarantine_sql(warehouse)}
            )
            """,
            params,
        )[0]
    return Recomputation(
        published=(
            int(daily[0] or 0) + int(held[0] or 0),
            int(daily[1] or 0) + int(held[1] or 0),
            int(rollups or 0) + int(held[2] or 0),
        ),
        recomputed=(totals[0], totals[1], totals[2]),
    )


def _overflow_quarantine_sql(warehouse: Warehouse) -> str:
    """FROM … WHERE of what the day's latest publication quarantined (group_sum_overflow)."""
    return f"""
        FROM {warehouse.table("quarantined_rows")}
        WHERE day = {{day:Date}} AND rule = '{GROUP_SUM_OVERFLOW}' AND run_id = (
            SELECT argMax(run_id, published_at)
            FROM {warehouse.table("usage_day_publications")}
            WHERE day = {{day:Date}}
        )
    """


@dataclass
class QuarantineSummary:
    day: date
    by_rule: dict[str, int] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)  # whole files quarantined
    samples: list[dict] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(v for k, v in self.by_rule.items() if k not in self._file_rules)

    @property
    def total_files(self) -> int:
        return len(self.files)

    @property
    def _file_rules(self) -> set[str]:
        return {f["rule"] for f in self.files}

    def description(self) -> str:
        if not self.by_rule and not self.files:
            return f"nothing quarantined on {self.day}"
        rules = ", ".join(f"{rule}: {count}" for rule, count in sorted(self.by_rule.items()))
        return (
            f"{self.day}: quarantined {rules}. The good rows of these files are billed. Fix the "
            "emitting node (see files and samples); a corrected file under the same key or a "
            "new key is picked up by re-running daily_usage for the day."
        )


def quarantine_summary(warehouse: Warehouse, day: date, samples: int = 20) -> QuarantineSummary:
    """The day's current quarantine: a range of one day, so the rule (rows of the latest
    decision about every object version, and what the latest publication held back) is
    written once, in `audit_days.quarantine_summaries`."""
    from usage_etl.usage.audit_days import quarantine_summaries  # audit_days imports audit

    return quarantine_summaries(warehouse, [day], samples)[day]


@dataclass
class Conflicts:
    day: date
    count: int
    examples: list[dict]

    def description(self) -> str:
        if not self.count:
            return f"no conflicting versions on {self.day}"
        return (
            f"{self.count} event_id(s) on {self.day} have versions with the same emitted_at but "
            "different values; the version with the higher content hash is billed. Ask the "
            "node's owner to re-emit with a later emitted_at."
        )


def conflicts(warehouse: Warehouse, day: date, limit: int = 20) -> Conflicts:
    params = {"day": day, "limit": limit}
    # The publish already counted conflicts per hour: list them only when there are some, so a
    # clean day costs no second pass over its staged rows.
    published = warehouse.query_one(
        f"SELECT sum(conflicts) FROM {warehouse.table('usage_hourly')} WHERE day = {{day:Date}}",
        params,
    )
    if not published:
        return Conflicts(day, 0, [])
    rows = warehouse.query_dicts(
        f"""
        SELECT event_id, any(node_id) AS node, toString(max(emitted_at)) AS latest_emitted_at,
               count() AS versions_at_latest
        FROM (
            SELECT event_id, node_id, emitted_at, {CONTENT_HASH} AS content_hash,
                   max(emitted_at) OVER (PARTITION BY event_id) AS latest
            FROM ({counting_rows_sql(warehouse)})
            WHERE event_hash IN (
                SELECT event_hash FROM ({counting_rows_sql(warehouse)})
                GROUP BY event_hash HAVING count() > 1
            )
        )
        WHERE emitted_at = latest
        GROUP BY event_id
        HAVING uniqExact(content_hash) > 1
        ORDER BY event_id
        """,
        params,
    )
    return Conflicts(day, len(rows), rows[:limit])
