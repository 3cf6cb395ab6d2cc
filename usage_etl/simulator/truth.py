"""Ground truth: what the pipeline must produce from a given set of simulated files.

Computed from the rows the simulator knows it wrote, never by reading the files back:
rows of unreadable files and rows it broke on purpose are excluded; per event_id the version
with the greatest emitted_at wins. Conflicts (same event_id and emitted_at, other values) are
resolved as the pipeline resolves them, by the greatest content hash (`usage/dedupe.py`),
and `conflicting_event_ids` names them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from usage_etl.rollups.schema import FIELDS, USAGE_DIMENSIONS
from usage_etl.usage.dedupe import content_hash

if TYPE_CHECKING:
    from usage_etl.simulator.model import SimFile

ROW_SCHEMA = {
    "schema_version": pl.Int64,
    "event_id": pl.String,
    "node_id": pl.String,
    "region": pl.String,
    "account_id": pl.String,
    "project_id": pl.String,
    "direction": pl.String,
    "operation": pl.String,
    "artifact_kind": pl.String,
    "network_path": pl.String,
    "window_start": pl.Datetime("us", "UTC"),
    "window_seconds": pl.Int64,
    "bytes": pl.Int64,
    "request_count": pl.Int64,
    "emitted_at": pl.Datetime("us", "UTC"),
}
USAGE_SCHEMA = {
    "day": pl.Date,
    **{d: pl.String for d in USAGE_DIMENSIONS},
    "bytes": pl.UInt64,
    "request_count": pl.UInt64,
}
OBJECT_SCHEMA = {
    "key": pl.String,
    "status": pl.String,
    "reason": pl.String,
    "rows_read": pl.Int64,
    "rows_loaded": pl.Int64,
    "rows_quarantined": pl.Int64,
}


def empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROW_SCHEMA)


def valid_rows(files: Sequence[SimFile]) -> pl.DataFrame:
    frames = [f.valid_rows for f in files if f.readable]
    return pl.concat(frames) if frames else empty_rows()


_CONTENT = [f for f in FIELDS if f not in ("event_id", "emitted_at", "schema_version")]


def latest_versions(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per event_id: greatest emitted_at; between different contents at that
    emitted_at (a conflict), the greatest content hash, as the pipeline picks."""
    top = rows.filter(pl.col("emitted_at") == pl.col("emitted_at").max().over("event_id"))
    top = top.unique(subset=["event_id", "emitted_at", *_CONTENT], keep="first")
    tied = pl.col("event_id").is_duplicated()
    single, conflicts = top.filter(~tied), top.filter(tied)
    if conflicts.height:
        hashes = [content_hash(row) for row in conflicts.iter_rows(named=True)]
        conflicts = (
            conflicts.with_columns(pl.Series("_hash", hashes, dtype=pl.Binary))
            .sort(["event_id", "_hash"], descending=[False, True])
            .unique(subset="event_id", keep="first", maintain_order=True)
            .drop("_hash")
        )
    return pl.concat([single, conflicts]).sort("event_id")


def aggregate_usage(rows: pl.DataFrame, sort: bool = True) -> pl.DataFrame:
    """Deduplicated rows -> contract §4 rows (project_id '' where null), sorted."""
    keys = ["day", *USAGE_DIMENSIONS]
    usage = (
        rows.with_columns(
            day=pl.col("window_start").dt.date(), project_id=pl.col("project_id").fill_null("")
        )
        .group_by(keys)
        .agg(pl.col("bytes").sum(), pl.col("request_count").sum())
        .cast({"bytes": pl.UInt64, "request_count": pl.UInt64})
        .select(list(USAGE_SCHEMA))
    )
    return usage.sort(keys) if sort else usage


def expected_usage_daily(files: Sequence[SimFile], sort: bool = True) -> pl.DataFrame:
    rows = valid_rows(files)
    if rows["event_id"].n_unique() < rows.height:  # sorting only pays when versions repeat
        rows = latest_versions(rows)
    return aggregate_usage(rows, sort)


def merge_usage(frames: Sequence[pl.DataFrame], sort: bool = True) -> pl.DataFrame:
    """Sum partial truths of disjoint node-hours (the streaming path)."""
    if not frames:
        return pl.DataFrame(schema=USAGE_SCHEMA)
    keys = ["day", *USAGE_DIMENSIONS]
    merged = (
        pl.concat(frames)
        .group_by(keys)
        .agg(pl.col("bytes").sum(), pl.col("request_count").sum())
        .select(list(USAGE_SCHEMA))
    )
    return merged.sort(keys) if sort else merged


def conflicting_event_ids(files: Sequence[SimFile]) -> set[str]:
    """event_ids whose winning emitted_at carries more than one distinct content."""
    rows = valid_rows(files)
    top = rows.filter(pl.col("emitted_at") == pl.col("emitted_at").max().over("event_id"))
    distinct = top.unique(subset=["event_id", *_CONTENT]).group_by("event_id").len()
    return set(distinct.filter(pl.col("len") > 1)["event_id"].to_list())


def expected_quarantine(files: Sequence[SimFile]) -> dict[str, int]:
    """{RowRule value: quarantined rows} for readable files, plus {FileRule value: files}."""
    counts: Counter[str] = Counter()
    for f in files:
        if f.file_rule:
            counts[str(f.file_rule)] += 1
        elif f.readable:
            counts.update(f.bad_rows["rule"].to_list())
    return dict(counts)


def expected_ignored(files: Sequence[SimFile]) -> dict[str, int]:
    """{IgnoreReason value: objects} for stray objects."""
    return dict(Counter(str(f.ignore_reason) for f in files if f.ignore_reason))


def expected_objects(files: Sequence[SimFile]) -> pl.DataFrame:
    """Per object: status loaded | quarantined | ignored, the reason, and row counts (rows are
    counted for readable files only)."""
    records = []
    for f in files:
        status = "ignored" if f.ignore_reason else "quarantined" if f.file_rule else "loaded"
        read = f.rows.height if f.readable else 0
        bad = f.bad_rows.height if f.readable else 0
        reason = f.ignore_reason or f.file_rule or ""
        records.append((f.key, status, reason, read, read - bad, bad))
    return pl.DataFrame(records, schema=OBJECT_SCHEMA, orient="row")
