"""Turn one rollup object's bytes into a loosely typed polars frame, or quarantine the file.

Readers only *parse*; every contract rule is checked afterwards by `validate.py`, so Parquet and
NDJSON rows are judged by the same code. A reader raises `FileQuarantined` only for what makes a
whole file unusable: it cannot be decoded, a required column is missing, or a Parquet column has
a type that cannot hold its field. Which function reads which format is the registry's word
(`rollups/formats.py`), not a branch here.

Text that is not UTF-8 is a row problem, not a file one: polars refuses a whole Parquet file
with one such string, so that file is read again with pyarrow (which does not check), its text
columns as bytes, and each row whose text field is not UTF-8 is reported under that field's
rule. NDJSON lines with such bytes are judged the same way by the careful path.

NDJSON has two paths. The fast path lets polars parse the whole file against the expected
schema; if any line is off (bad JSON, a string where an int belongs, an int ≥ 2^63…) polars
refuses the file and the careful path parses line by line, so each bad line becomes one
quarantined row with its rule while the good lines still load.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from usage_etl.rollups.formats import rollup_format
from usage_etl.rollups.schema import (
    FIELDS,
    INT_FIELDS,
    MAX_COUNTER,
    REQUIRED_FIELDS,
    STRING_FIELDS,
    TIME_FIELDS,
    FileRule,
    RowRule,
)
from usage_etl.settings import tuning

# The frame every reader returns: ints as Int64 (null = missing or unrepresentable), strings as
# String, timestamps as Datetime(us, UTC); `_row` is the 1-based row/line number in the file and
# `_rule`/`_field`/`_value` carry a parse-level problem found before validation.
PARSED_SCHEMA: dict[str, pl.DataType] = {
    **{f: pl.String() for f in STRING_FIELDS},
    **{f: pl.Int64() for f in INT_FIELDS},
    **{f: pl.Datetime("us", "UTC") for f in TIME_FIELDS},
}
PARSE_META = {
    "_row": pl.UInt32(),
    "_rule": pl.String(),
    "_field": pl.String(),
    "_value": pl.String(),
}
RFC3339 = "%+"

# The Python path holds a file's text in memory: a gzip stream that inflates beyond this (a
# decompression bomb; a node's hourly file is tens of MiB) is quarantined instead of exhausting
# the run's memory. ClickHouse's native reads stream and are not bound by it.
MAX_DECOMPRESSED_BYTES = tuning().max_decompressed_bytes  # USAGE_ETL_MAX_DECOMPRESSED_BYTES
_GUNZIP_CHUNK = 1 << 20


class FileQuarantined(Exception):
    def __init__(self, rule: FileRule, detail: str):
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class ParsedFile:
    frame: pl.DataFrame  # PARSED_SCHEMA + PARSE_META columns
    missing_network_path: bool


def read_rollup_file(body: bytes, fmt: str) -> ParsedFile:
    """Parse a file of a registered format (`fmt` is its name); an unknown name raises."""
    return reader_for(fmt)(body)


def reader_for(fmt: str) -> Callable[[bytes], ParsedFile]:
    """The function of this module that rollups/formats.py names as the format's reader."""
    return globals()[rollup_format(fmt).reader]


# -- Parquet -------------------------------------------------------------------------------------


# A corrupt file can make polars panic (PanicException is not an Exception): still one file.
_DECODE_ERRORS = (Exception, pl.exceptions.PanicException)


_NOT_UTF8 = re.compile(r"utf-?8", re.I)


def read_parquet(body: bytes) -> ParsedFile:
    problems = None
    try:
        frame = pl.read_parquet(io.BytesIO(body))
    except _DECODE_ERRORS as exc:
        if not _NOT_UTF8.search(str(exc)):
            raise FileQuarantined(
                FileRule.UNREADABLE, f"not a readable Parquet file: {exc}"
            ) from None
        try:
            frame, problems = _read_parquet_text_as_bytes(body)
        except FileQuarantined:
            raise
        except _DECODE_ERRORS as again:  # damaged beyond text values (a column name, a page)
            raise FileQuarantined(
                FileRule.UNREADABLE, f"not a readable Parquet file: {exc}; {again}"
            ) from None
    missing = [f for f in REQUIRED_FIELDS if f not in frame.columns]
    if missing:
        raise FileQuarantined(FileRule.MISSING_COLUMNS, f"missing columns: {', '.join(missing)}")
    columns = []
    for name in FIELDS:
        if name not in frame.columns:
            columns.append(pl.lit(None, PARSED_SCHEMA[name]).alias(name))
            continue
        columns.append(_parquet_column(name, frame.schema[name]))
    try:
        parsed = frame.select(columns).with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias("_row"),
            *(
                [pl.lit(None, pl.String).alias(c) for c in ("_rule", "_field", "_value")]
                if problems is None
                else problems
            ),
        )
    except _DECODE_ERRORS as exc:
        raise FileQuarantined(FileRule.UNREADABLE, f"undecodable values: {exc}") from None
    return ParsedFile(parsed, missing_network_path="network_path" not in frame.columns)


def _read_parquet_text_as_bytes(body: bytes) -> tuple[pl.DataFrame, list[pl.Series]]:
    """A Parquet file with text that is not UTF-8, read with pyarrow: each text field of the
    contract is decoded row by row (a value that does not decode becomes null), and the first
    such field of a row, in contract order, is its problem (`_rule`, `_field`, `_value`). Text
    columns outside the contract are dropped. Anything pyarrow cannot read quarantines the
    file, as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body))
    except Exception as exc:  # any failure: the file is unreadable
        raise FileQuarantined(FileRule.UNREADABLE, f"not a readable Parquet file: {exc}") from None
    rows = table.num_rows
    rule: list[str | None] = [None] * rows
    field: list[str | None] = [None] * rows
    value: list[str | None] = [None] * rows

    def is_text(kind: pa.DataType) -> bool:
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        return (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or (pa.types.is_string_view(kind))
        )

    for name in [n for n in table.column_names if n not in STRING_FIELDS]:
        if is_text(table.schema.field(name).type):
            table = table.drop_columns([name])
    for name in [n for n in FIELDS if n in STRING_FIELDS and n in table.column_names]:
        index = table.column_names.index(name)
        if not is_text(table.schema.field(name).type):
            continue  # a wrong type: _parquet_column quarantines the file, as before
        texts: list[str | None] = []
        for row, raw in enumerate(table.column(index).cast(pa.large_binary()).to_pylist()):
            try:
                texts.append(None if raw is None else raw.decode())
            except UnicodeDecodeError:
                texts.append(None)
                if rule[row] is None:
                    rule[row], field[row] = _RULE_FOR_FIELD[name].value, name
                    value[row] = _clip(f"not UTF-8: {raw!r}")
        table = table.set_column(index, name, pa.array(texts, pa.large_string()))
    try:
        frame = pl.from_arrow(table)
    except _DECODE_ERRORS as exc:
        raise FileQuarantined(FileRule.UNREADABLE, f"undecodable values: {exc}") from None
    problems = [
        pl.Series(name, values, dtype=pl.String)
        for name, values in (("_rule", rule), ("_field", field), ("_value", value))
    ]
    return frame, problems


def _parquet_column(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if name in STRING_FIELDS:
        if dtype in (pl.String, pl.Categorical, pl.Enum, pl.Null) or isinstance(
            dtype, pl.Categorical | pl.Enum
        ):
            return column.cast(pl.String)
    elif name in INT_FIELDS:
        if dtype.is_integer() or dtype == pl.Null:
            # UInt64 values ≥ 2^63 become null here and are quarantined as out of range.
            return column.cast(pl.Int64, strict=False)
    elif isinstance(dtype, pl.Datetime):
        return _utc_micros(column, dtype.time_unit)
    elif dtype == pl.Null:
        return column.cast(PARSED_SCHEMA[name])
    raise FileQuarantined(FileRule.COLUMN_TYPE, f"column {name} has type {dtype}")


# Polars panics converting or printing datetimes beyond chrono's range (about ±262,000 years).
# No rollup happens outside years 1-9999: such a timestamp is read as null and quarantined.
_MICROS_RANGE = (-62_135_596_800_000_000, 253_402_300_800_000_000)  # 0001-01-01, 10000-01-01


def _utc_micros(column: pl.Expr, unit: str) -> pl.Expr:
    # Naive timestamps are UTC (contract §1) and aware ones are stored as UTC epochs, so the
    # physical value already is the UTC instant; only its unit changes.
    raw = column.to_physical()
    if unit == "ns":  # ±292 years around 1970: always in range
        return (raw // 1000).cast(pl.Datetime("us", "UTC"))
    scale = 1000 if unit == "ms" else 1
    low, high = (bound // scale for bound in _MICROS_RANGE)
    in_range = pl.when(raw.is_between(low, high, closed="left")).then(raw)
    return (in_range * scale).cast(pl.Datetime("us", "UTC"))


# -- NDJSON.gz -----------------------------------------------------------------------------------


def read_ndjson_gz(body: bytes) -> ParsedFile:
    if not body:  # gzip.decompress(b"") is b"": a failed upload must not pass as an empty hour
        raise FileQuarantined(FileRule.UNREADABLE, "empty object: not a gzip stream")
    raw = _gunzip(body, MAX_DECOMPRESSED_BYTES)
    try:
        return _ndjson_fast(raw)
    except pl.exceptions.PolarsError:
        return _ndjson_careful(raw)


def _gunzip(body: bytes, limit: int) -> bytes:
    """All members of a gzip stream, checked (CRC, length) as gzip.decompress checks them, but
    never more than `limit` bytes of output."""
    chunks, size = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as stream:
            while chunk := stream.read(_GUNZIP_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise FileQuarantined(
                        FileRule.UNREADABLE,
                        f"decompresses to more than {limit:,} bytes "
                        "(USAGE_ETL_MAX_DECOMPRESSED_BYTES): not read, to protect the run's memory",
                    )
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileQuarantined(FileRule.UNREADABLE, f"not a complete gzip stream: {exc}") from None
    return b"".join(chunks)


_FAST_SCHEMA = {
    **{f: pl.String for f in STRING_FIELDS + TIME_FIELDS},
    **{f: pl.Int64 for f in INT_FIELDS},
}


# Polars reads any JSON value into a String column as its JSON text, and decodes lone surrogate
# escapes leniently (as NUL). Files where that could happen take the careful path, which judges
# those rows: a text field whose value is not a string or null, an escaped ASCII letter or `_`
# (a key such as "acc\u006funt_id" that no ordinary writer produces), a surrogate escape.
_TEXT_KEYS = b"|".join(name.encode() for name in STRING_FIELDS + TIME_FIELDS)
_NON_STRING_VALUE = re.compile(rb'"(?:' + _TEXT_KEYS + rb')"\s*:\s*[^"n\s]')
_SUSPICIOUS_ESCAPE = re.compile(rb"\\u(?:00(?:[67][0-9a-fA-F]|5[fF])|[dD][89a-fA-F])")


def _ndjson_fast(raw: bytes) -> ParsedFile:
    if not raw.strip():
        return ParsedFile(_empty(), missing_network_path=False)
    if b"\n\n" in raw or raw.startswith(b"\n"):
        raise pl.exceptions.ComputeError("blank lines: take the careful path to keep line numbers")
    if _NON_STRING_VALUE.search(raw) or (b"\\u" in raw and _SUSPICIOUS_ESCAPE.search(raw)):
        raise pl.exceptions.ComputeError("a text field may hold another JSON type")
    frame = pl.read_ndjson(io.BytesIO(raw), schema=_FAST_SCHEMA)
    lines = raw.count(b"\n") + (not raw.endswith(b"\n"))
    if frame.height != lines:  # polars skips whitespace-only lines: keep line numbers right
        raise pl.exceptions.ComputeError("blank lines: take the careful path")
    parsed = frame.with_columns(
        *[_parse_time(f) for f in TIME_FIELDS],
        pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias("_row"),
        # A timestamp that does not parse is a row problem: remember its raw text.
        *_time_problems(frame),
    )
    return ParsedFile(parsed.select([*PARSED_SCHEMA, *PARSE_META]), missing_network_path=False)


def _parse_time(name: str) -> pl.Expr:
    return pl.col(name).str.to_datetime(RFC3339, time_zone="UTC", time_unit="us", strict=False)


def _time_problems(frame: pl.DataFrame) -> list[pl.Expr]:
    bad = {
        f: pl.col(f).is_not_null()
        & pl.col(f)
        .str.to_datetime(RFC3339, time_zone="UTC", time_unit="us", strict=False)
        .is_null()
        for f in TIME_FIELDS
    }
    rule = pl.when(bad["window_start"]).then(pl.lit(RowRule.WINDOW_START.value))
    rule = rule.when(bad["emitted_at"]).then(pl.lit(RowRule.EMITTED_AT.value))
    field = pl.when(bad["window_start"]).then(pl.lit("window_start"))
    field = field.when(bad["emitted_at"]).then(pl.lit("emitted_at"))
    value = pl.when(bad["window_start"]).then(pl.col("window_start"))
    value = value.when(bad["emitted_at"]).then(pl.col("emitted_at"))
    return [
        rule.otherwise(None).cast(pl.String).alias("_rule"),
        field.otherwise(None).cast(pl.String).alias("_field"),
        value.otherwise(None).cast(pl.String).alias("_value"),
    ]


def _ndjson_careful(raw: bytes) -> ParsedFile:
    records = [
        _parse_line(number, line)
        for number, line in enumerate(raw.split(b"\n"), start=1)
        if line.strip()
    ]
    if not records:
        return ParsedFile(_empty(), missing_network_path=False)
    frame = pl.DataFrame(records, schema={**_FAST_SCHEMA, **PARSE_META})
    time_rule, time_field, time_value = _time_problems(frame)
    line_ok = pl.col("_rule").is_null()
    parsed = frame.with_columns(
        # A line-level problem (bad JSON, wrong JSON type) comes first; else a timestamp problem.
        pl.when(line_ok).then(time_rule).otherwise(pl.col("_rule")).alias("_rule"),
        pl.when(line_ok).then(time_field).otherwise(pl.col("_field")).alias("_field"),
        pl.when(line_ok).then(time_value).otherwise(pl.col("_value")).alias("_value"),
    ).with_columns(*[_parse_time(f) for f in TIME_FIELDS])
    return ParsedFile(parsed.select([*PARSED_SCHEMA, *PARSE_META]), missing_network_path=False)


_RULE_FOR_FIELD = {
    "schema_version": RowRule.SCHEMA_VERSION,
    "event_id": RowRule.EVENT_ID,
    "node_id": RowRule.NODE_ID_MISMATCH,
    "region": RowRule.REGION,
    "account_id": RowRule.ACCOUNT_ID,
    "project_id": RowRule.PROJECT_ID,
    "direction": RowRule.DIRECTION,
    "operation": RowRule.OPERATION,
    "artifact_kind": RowRule.ARTIFACT_KIND,
    "network_path": RowRule.NETWORK_PATH,
    "window_start": RowRule.WINDOW_START,
    "window_seconds": RowRule.WINDOW_SECONDS,
    "bytes": RowRule.BYTES,
    "request_count": RowRule.REQUEST_COUNT,
    "emitted_at": RowRule.EMITTED_AT,
}


def _first_wins(pairs: list[tuple[str, object]]) -> dict:
    """Of duplicate keys the first counts, as in polars' fast path."""
    obj: dict = {}
    for key, value in pairs:
        obj.setdefault(key, value)
    return obj


def _parse_line(number: int, line: bytes) -> dict:
    """One NDJSON line -> a record; a field of the wrong JSON type is reported.

    A string field holds a string (or null): a number, boolean, object or array there is a
    wrong type, and so is a string with a lone surrogate (it has no UTF-8 form). Integer fields
    hold JSON integers. A row is judged the same whichever path its file took.
    """
    record: dict = {"_row": number, "_rule": None, "_field": None, "_value": None}
    try:
        try:
            obj = json.loads(line, object_pairs_hook=_first_wins)
        except UnicodeDecodeError:
            # Bytes that are not UTF-8: decoded as lone surrogates, so a text field holding
            # them is reported under that field's rule (as a "\ud800" escape is) and the
            # line's other fields are still read.
            obj = json.loads(line.decode("utf-8", "surrogateescape"), object_pairs_hook=_first_wins)
    except (ValueError, RecursionError):
        return {**record, "_rule": RowRule.INVALID_JSON.value, "_value": _clip(repr(line))}
    if not isinstance(obj, dict):
        return {**record, "_rule": RowRule.INVALID_JSON.value, "_value": _clip(repr(line))}
    for name in FIELDS:
        value = _coerce(name, obj.get(name))
        if value is _INVALID:
            record[name] = None
            if record["_rule"] is None:
                rule = _RULE_FOR_FIELD[name].value
                record.update(_rule=rule, _field=name, _value=_clip(repr(obj.get(name))))
        else:
            record[name] = value
    return record


_INVALID = object()


def _coerce(name: str, value: object) -> object:
    if value is None:
        return None
    if name in INT_FIELDS:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        return value if is_int and -MAX_COUNTER <= value < MAX_COUNTER else _INVALID
    return value if isinstance(value, str) and _has_utf8(value) else _INVALID


def _has_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape
        return False
    return True


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={**PARSED_SCHEMA, **PARSE_META})
