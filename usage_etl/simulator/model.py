"""What the simulator hands out: files (`SimFile`) and days (`SimDay`) with their truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl
import pyarrow as pa

from usage_etl.rollups.schema import FIELDS
from usage_etl.simulator import truth


@dataclass
class SimFile:
    """One object a node writes, with everything a test needs to know about it."""

    key: str  # relative to the landing prefix (rollups.schema.object_key with prefix "")
    body: bytes
    format: str  # "parquet" | "ndjson.gz" | "other"
    day: date
    hour: int
    node_id: str
    arrives_at: datetime
    is_late: bool = False
    faults: frozenset[str] = frozenset()
    # Every row written (broken ones too) as contract columns plus `rule`: the RowRule value a
    # row breaks, null for a valid row. None for stray objects.
    rows: pl.DataFrame | None = None
    columns: tuple[str, ...] = ()  # columns present in the body
    file_rule: str | None = None  # FileRule value when the whole file is unreadable
    ignore_reason: str | None = None  # IgnoreReason value for stray objects
    copy_of: str | None = None  # key of the file this one copies (redelivery / good copy)

    @property
    def readable(self) -> bool:
        return self.rows is not None and self.file_rule is None and self.ignore_reason is None

    @property
    def valid_rows(self) -> pl.DataFrame:
        """Rows the pipeline must load from this file (none if the file is unreadable)."""
        if not self.readable:
            return truth.empty_rows()
        if self.rows["rule"].null_count() == self.rows.height:
            return self.rows.select(FIELDS)
        return self.rows.filter(pl.col("rule").is_null()).select(FIELDS)

    @property
    def bad_rows(self) -> pl.DataFrame:
        if not self.readable:
            return truth.empty_rows().with_columns(rule=pl.lit(None, pl.String))
        return self.rows.filter(pl.col("rule").is_not_null())

    def __repr__(self) -> str:
        n = 0 if self.rows is None else self.rows.height
        tags = ",".join(sorted(self.faults))
        return f"SimFile({self.key!r}, {self.format}, rows={n}, late={self.is_late}, [{tags}])"


@dataclass
class SimDay:
    """One generated day: its files in upload order, its cache events, and its truth."""

    day: date
    files: list[SimFile]
    cache_events: pa.Table
    silent_node_hours: list[tuple[str, int]] = field(default_factory=list)
    under_reporting_nodes: tuple[str, ...] = ()

    @property
    def on_time_files(self) -> list[SimFile]:
        return [f for f in self.files if not f.is_late]

    @property
    def late_files(self) -> list[SimFile]:
        return [f for f in self.files if f.is_late]

    def with_fault(self, fault: str) -> list[SimFile]:
        return [f for f in self.files if fault in f.faults]

    def _chosen(self, files: list[SimFile] | None) -> list[SimFile]:
        return self.on_time_files if files is None else files

    def expected_usage_daily(self, files: list[SimFile] | None = None) -> pl.DataFrame:
        """Exact contract §4 rows for `files` (default: the on-time files)."""
        return truth.expected_usage_daily(self._chosen(files))

    def expected_quarantine(self, files: list[SimFile] | None = None) -> dict[str, int]:
        """{RowRule value: rows, FileRule value: files} for `files` (default: on time)."""
        return truth.expected_quarantine(self._chosen(files))

    def expected_ignored(self, files: list[SimFile] | None = None) -> dict[str, int]:
        return truth.expected_ignored(self._chosen(files))

    def expected_objects(self, files: list[SimFile] | None = None) -> pl.DataFrame:
        return truth.expected_objects(self._chosen(files))

    def conflicting_event_ids(self, files: list[SimFile] | None = None) -> set[str]:
        return truth.conflicting_event_ids(self._chosen(files))

    @property
    def rows_written(self) -> int:
        return sum(f.rows.height for f in self.files if f.rows is not None)
