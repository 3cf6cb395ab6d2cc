"""Turning one node-hour's true cells into the files a faulty node actually delivers.

Per row (one uniform draw, so the bands never overlap): a row is broken (exactly one rule),
corrected later (the first file carries a preliminary version), or given a conflicting twin.
Per file: truncated or missing a column (optionally followed by a good copy), re-delivered
identically under a new name, late. Per node-hour: silent, stray objects.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from usage_etl.rollups.formats import rollup_format
from usage_etl.rollups.schema import FileRule, IgnoreReason, RowRule
from usage_etl.simulator import writer
from usage_etl.simulator.fleet import MICROS, Cells, Node
from usage_etl.simulator.model import SimFile
from usage_etl.simulator.spec import Fault, FaultSpec

HOUR = pl.duration(hours=1)
# Rule -> (column, expression producing a value that breaks only that rule).
RULE_BREAKERS: dict[str, tuple[str, pl.Expr]] = {
    RowRule.SCHEMA_VERSION: ("schema_version", pl.lit(2, pl.Int64)),
    RowRule.EVENT_ID: ("event_id", pl.lit("")),
    RowRule.NODE_ID_MISMATCH: ("node_id", pl.col("node_id") + "-imposter"),
    RowRule.REGION: ("region", pl.lit("")),
    RowRule.ACCOUNT_ID: ("account_id", pl.lit("")),
    RowRule.DIRECTION: ("direction", pl.lit("sideways")),
    RowRule.OPERATION: ("operation", pl.lit("")),
    RowRule.ARTIFACT_KIND: ("artifact_kind", pl.lit("")),
    RowRule.NETWORK_PATH: ("network_path", pl.lit("satellite")),
    RowRule.WINDOW_OUTSIDE_HOUR: ("window_start", pl.col("window_start") - HOUR),
    RowRule.WINDOW_SECONDS: ("window_seconds", pl.lit(7, pl.Int64)),
    RowRule.BYTES: ("bytes", -pl.col("bytes") - 1),
    RowRule.REQUEST_COUNT: ("request_count", -pl.col("request_count") - 1),
}
UPLOAD_LAG = timedelta(minutes=5)
RULE_ORDER = {str(rule): i for i, rule in enumerate(RowRule)}
# The row rule a line breaks when it lacks a required field (NDJSON).
MISSING_FIELD_RULE = {
    "region": RowRule.REGION,
    "bytes": RowRule.BYTES,
    "emitted_at": RowRule.EMITTED_AT,
    "event_id": RowRule.EVENT_ID,
    "window_start": RowRule.WINDOW_START,
}


@dataclass(eq=False)  # drafts are compared by identity
class Draft:
    """A file before it gets its name: rows (with `rule`), faults, and how it is broken."""

    rows: pl.DataFrame
    faults: set[str] = field(default_factory=set)
    file_rule: str | None = None
    drop_column: str | None = None
    truncate_at: float | None = None
    copy_of: Draft | None = None


@dataclass
class UnitContext:
    day: date
    hour: int
    node: Node
    faults: FaultSpec
    rng: np.random.Generator

    @property
    def node_hour(self) -> tuple[str, int]:
        return (self.node.node_id, self.hour)

    @property
    def hour_end(self) -> datetime:
        start = datetime(self.day.year, self.day.month, self.day.day, self.hour, tzinfo=UTC)
        return start + timedelta(hours=1)


def is_silent(ctx: UnitContext) -> bool:
    forced = ctx.node_hour in ctx.faults.silent_node_hours
    return forced or bool(ctx.rng.random() < ctx.faults.silent_rate)


def unit_files(cells: Cells, ctx: UnitContext) -> list[SimFile]:
    """The files (and stray objects) node `ctx.node` delivers for one hour, in upload order."""
    drafts = _row_faults(cells.frame, ctx) if cells.frame.height else []
    drafts = _file_faults(drafts, ctx)
    files = _name_and_write(drafts, ctx)
    if ctx.rng.random() < ctx.faults.stray_rate and ctx.faults.stray_kinds:
        files.append(_stray(ctx))
    return files


# -- rows --------------------------------------------------------------------------------------


def _row_faults(frame: pl.DataFrame, ctx: UnitContext) -> list[Draft]:
    spec, rng, n = ctx.faults, ctx.rng, frame.height
    if not _has_row_faults(ctx):
        rows = frame.with_columns(rule=pl.lit(None, pl.String))
        return [Draft(chunk) for chunk in _split(rows, ctx.node.files_per_hour) if chunk.height]
    unit_tags: set[str] = set()
    if ctx.node.node_id in spec.under_reporting_nodes:
        frame = frame.with_columns(
            (pl.col("bytes") * spec.under_report_factor).floor().cast(pl.Int64)
        )
        unit_tags.add(Fault.UNDER_REPORTING)
    u = rng.random(n)
    bad = u < spec.bad_row_rate
    corrected = (u >= spec.bad_row_rate) & (u < spec.bad_row_rate + spec.correction_rate)
    conflict = (u >= spec.bad_row_rate + spec.correction_rate) & (
        u < spec.bad_row_rate + spec.correction_rate + spec.conflict_rate
    )
    factor = rng.uniform(0.5, 0.95, n)
    first = frame.with_columns(
        rule=pl.Series(_assign_rules(bad, ctx), dtype=pl.String),
        bytes=pl.when(pl.Series(corrected))
        .then((pl.col("bytes") * pl.Series(factor)).floor().cast(pl.Int64))
        .otherwise(pl.col("bytes")),
        request_count=pl.when(pl.Series(corrected))
        .then((pl.col("request_count") * pl.Series(factor)).floor().cast(pl.Int64))
        .otherwise(pl.col("request_count")),
    )
    first = _break_rows(first)
    drafts = [
        Draft(chunk, set(unit_tags))
        for chunk in _split(first, ctx.node.files_per_hour)
        if chunk.height
    ]
    for draft, chunk_bad in zip(drafts, _split_mask(bad, drafts), strict=True):
        if chunk_bad:
            draft.faults.add(Fault.BAD_ROWS)
    if corrected.any():
        _add_correction(drafts, frame.filter(pl.Series(corrected)), ctx, unit_tags, corrected)
    if conflict.any():
        twins = frame.filter(pl.Series(conflict)).with_columns(
            bytes=pl.col("bytes") + 1 + pl.col("bytes") // 10, rule=pl.lit(None, pl.String)
        )
        drafts.append(Draft(twins, {Fault.CONFLICT, *unit_tags}))
    return drafts


def _has_row_faults(ctx: UnitContext) -> bool:
    spec = ctx.faults
    rates = spec.bad_row_rate + spec.correction_rate + spec.conflict_rate
    return rates > 0 or ctx.node.node_id in spec.under_reporting_nodes


def _can_break(rule: str, node: Node) -> bool:
    """network_path needs the column; invalid_json needs a JSON file."""
    if rule == RowRule.NETWORK_PATH:
        return node.writes_network_path
    if rule == RowRule.INVALID_JSON:
        return node.format == "ndjson.gz"
    return True


def _assign_rules(bad: np.ndarray, ctx: UnitContext) -> list[str | None]:
    allowed = [r for r in ctx.faults.bad_row_rules if _can_break(r, ctx.node)]
    rules: list[str | None] = [None] * len(bad)
    if not allowed:
        return rules
    offset = int(ctx.rng.integers(0, len(allowed)))
    for i, row in enumerate(np.flatnonzero(bad)):
        rules[row] = str(allowed[(offset + i) % len(allowed)])
    return rules


def _break_rows(rows: pl.DataFrame) -> pl.DataFrame:
    present = set(rows["rule"].drop_nulls().unique().to_list()) & set(RULE_BREAKERS)
    for rule in present:  # invalid_json rows keep their values: the writer garbles the line
        column, broken = RULE_BREAKERS[rule]
        rows = rows.with_columns(
            pl.when(pl.col("rule") == rule).then(broken).otherwise(pl.col(column)).alias(column)
        )
    return rows


def _split(rows: pl.DataFrame, parts: int) -> list[pl.DataFrame]:
    """Contiguous chunks (rows are ordered by window): a node flushes windows in order."""
    bounds = np.linspace(0, rows.height, parts + 1).astype(int)
    return [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


def _split_mask(mask: np.ndarray, drafts: list[Draft]) -> list[bool]:
    out, start = [], 0
    for d in drafts:
        out.append(bool(mask[start : start + d.rows.height].any()))
        start += d.rows.height
    return out


def _add_correction(drafts, final_rows, ctx: UnitContext, tags, corrected) -> None:
    later = ctx.rng.integers(10 * 60 * MICROS, 2 * 3600 * MICROS, final_rows.height)
    rows = final_rows.with_columns(
        emitted_at=pl.col("emitted_at") + pl.Series(later).cast(pl.Duration("us")),
        rule=pl.lit(None, pl.String),
    )
    for draft, has in zip(drafts, _split_mask(corrected, drafts), strict=True):
        if has:
            draft.faults.add(Fault.CORRECTED)
    correction = Draft(rows, {Fault.CORRECTION, *tags})
    if ctx.rng.random() < ctx.faults.correction_first_rate:
        correction.faults.add(Fault.CORRECTION_FIRST)
        drafts.insert(0, correction)
    else:
        drafts.append(correction)


# -- files -------------------------------------------------------------------------------------


def _file_faults(drafts: list[Draft], ctx: UnitContext) -> list[Draft]:
    spec, rng = ctx.faults, ctx.rng
    out: list[Draft] = []
    redeliveries: list[Draft] = []
    data = [d for d in drafts if not d.faults & {Fault.CORRECTION, Fault.CONFLICT}]
    forced_first = data[0] if data else None
    for draft in drafts:
        out.append(draft)
        is_data = draft in data
        truncated = is_data and (
            rng.random() < spec.truncated_rate
            or (draft is forced_first and ctx.node_hour in spec.truncated_node_hours)
        )
        missing = (
            is_data
            and not truncated
            and (
                rng.random() < spec.missing_column_rate
                or (draft is forced_first and ctx.node_hour in spec.missing_column_node_hours)
            )
        )
        if truncated or missing:
            good = Draft(draft.rows, {*draft.faults, Fault.GOOD_COPY}, copy_of=draft)
            _break_file(draft, truncated, rng, ctx.node.format)
            if rng.random() < spec.good_copy_rate:
                out.append(good)
        elif rng.random() < spec.redelivery_rate:
            redeliveries.append(Draft(draft.rows, {*draft.faults, Fault.REDELIVERY}, copy_of=draft))
    return out + redeliveries


def _break_file(draft: Draft, truncated: bool, rng: np.random.Generator, fmt: str) -> None:
    if truncated:
        draft.faults.add(Fault.TRUNCATED)
        draft.file_rule = FileRule.UNREADABLE
        draft.truncate_at = float(rng.uniform(0.3, 0.9))
        return
    draft.faults.add(Fault.MISSING_COLUMN)
    columns = writer.DROPPABLE_COLUMNS
    draft.drop_column = columns[int(rng.integers(0, len(columns)))]
    if fmt == "parquet":
        draft.file_rule = FileRule.MISSING_COLUMNS  # the file's schema lacks it
        return
    # NDJSON has no file schema: every line lacks the field, so every row breaks its rule
    # (or an earlier one it already broke, in RowRule order).
    missing = MISSING_FIELD_RULE[draft.drop_column]
    draft.rows = draft.rows.with_columns(
        rule=pl.when(
            pl.col("rule").is_null()
            | (pl.col("rule").replace_strict(RULE_ORDER, default=99) > RULE_ORDER[missing])
        )
        .then(pl.lit(missing))
        .otherwise(pl.col("rule"))
    )
    draft.faults.add(Fault.BAD_ROWS)


def _is_late(ctx: UnitContext) -> bool:
    spec = ctx.faults
    forced = ctx.hour in spec.late_hours or ctx.node_hour in spec.late_node_hours
    return forced or bool(ctx.rng.random() < spec.late_rate)


def _name_and_write(drafts: list[Draft], ctx: UnitContext) -> list[SimFile]:
    node = ctx.node
    suffix = rollup_format(node.format).suffix
    bodies: dict[int, tuple[bytes, tuple[str, ...]]] = {}
    keys: dict[int, str] = {}
    files = []
    for seq, draft in enumerate(drafts):
        name = f"{_stem(ctx, seq)}{suffix}"
        key = writer.relative_key(ctx.day, ctx.hour, node.node_id, name)
        keys[id(draft)] = key
        columns = tuple(writer.written_columns(not node.writes_network_path, draft.drop_column))
        # Copies share the original's bytes, unless the original was written without a column.
        source = draft.copy_of if draft.copy_of and draft.copy_of.drop_column is None else None
        if source is not None and id(source) in bodies:
            data, columns = bodies[id(source)]
        else:
            data = writer.body(draft.rows, node.format, list(columns), node.naive_timestamps)
        bodies[id(draft)] = (data, columns)
        if draft.truncate_at is not None:
            data = writer.truncate(data, draft.truncate_at)
        late = _is_late(ctx)
        arrives = ctx.hour_end + UPLOAD_LAG + (ctx.faults.late_delay if late else timedelta())
        files.append(
            SimFile(
                key=key,
                body=data,
                format=node.format,
                day=ctx.day,
                hour=ctx.hour,
                node_id=node.node_id,
                arrives_at=arrives,
                is_late=late,
                faults=frozenset(draft.faults | ({Fault.LATE} if late else set())),
                rows=draft.rows,
                columns=columns,
                file_rule=draft.file_rule,
                copy_of=keys.get(id(draft.copy_of)) if draft.copy_of else None,
            )
        )
    return files


def _stem(ctx: UnitContext, seq: int) -> str:
    token = f"{int(ctx.rng.integers(0, 2**32)):08x}"
    return f"{ctx.node.node_id}-{ctx.day:%Y%m%d}T{ctx.hour:02d}-{seq:03d}-{token}"


def _stray(ctx: UnitContext) -> SimFile:
    kinds = ctx.faults.stray_kinds
    kind = kinds[int(ctx.rng.integers(0, len(kinds)))]
    stem = _stem(ctx, 999)
    name, data, reason = {
        "success_marker": ("_SUCCESS", b"", IgnoreReason.EMPTY),
        "tmp_suffix": (f"{stem}.parquet.tmp", b"PAR1partial", IgnoreReason.TEMPORARY),
        "tmp_folder": (f"_tmp/{stem}.parquet", b"PAR1partial", IgnoreReason.TEMPORARY),
        "csv": (f"{stem}.csv", b"event_id,bytes\nabc,1\n", IgnoreReason.UNSUPPORTED_SUFFIX),
    }[kind]
    return SimFile(
        key=writer.relative_key(ctx.day, ctx.hour, ctx.node.node_id, name),
        body=data,
        format="other",
        day=ctx.day,
        hour=ctx.hour,
        node_id=ctx.node.node_id,
        arrives_at=ctx.hour_end + UPLOAD_LAG,
        faults=frozenset({Fault.STRAY}),
        ignore_reason=reason,
    )
