"""The fast path: ClickHouse reads the day's objects from S3 itself.

Python (`readers.py` + `validate.py`) stays the authority on every contract rule. This path only
takes the files where ClickHouse is known to reach the same verdict with less work, and hands
everything else back:

1. **Parquet footers.** One `ParquetMetadata` query per group of files returns each file's ETag,
   row count and column types. A file is *eligible* when every contract column has a type whose
   values ClickHouse reads exactly as polars does (UTF-8 strings, signed 32/64-bit ints, micro-
   or nanosecond timestamps); anything else (other types, nesting, missing columns) goes the
   Python way, which quarantines it with the precise rule.
2. **Rows.** One `INSERT INTO rollup_rows SELECT … FROM s3(<explicit keys>)` per chunk checks
   every row against validate.py's rules, written as a condition at least as strict. Parquet
   keeps only the passing rows; NDJSON.gz (no footer to count lines) inserts every line, the
   failing ones under a *rejected* load id that no ledger entry ever names. `_path`, `_etag`
   and `_row_number` give each row its lineage.
3. **Verdict per file.** A file is decided here when every one of its rows passed, read at the
   listed ETag: a Parquet file must yield its footer's row count, an NDJSON file at least one
   line and no rejected one. A file with any rejected row, an ETag that moved, or a chunk whose
   query failed (a corrupt page or gzip stream, S3 trouble) goes back to the Python path, which
   re-reads it under the run's own load id. Rows this path inserted for such files carry the
   fast path's load id, which no ledger entry points to, so they never count.

With the embedded engine, small files are fetched once by Python first (usage/fetch.py, FETCH)
and every read above uses the local copies through `file()` instead of `s3()`: the footer-magic
screen runs on the fetched bytes, a fetched Parquet file's footer is read from its copy by Arrow
in the fetch (ClickHouse's footer query only for a footer Arrow cannot read), `_path` and `_etag`
are mapped back to the object's key and the ETag its GET returned. A GET that failed or returned
another ETag than the listing's hands the file back before any query. A server DSN keeps `s3()`:
its `file()` reads the server's disk.

Only objects of nodes with no registry restriction whose keys are plain (no glob characters)
take this path; self-hosted and unregistered nodes are judged in Python. Which ClickHouse input
format reads a file (`Parquet`: the footer plan, `LineAsString`: the line plan, none: Python
only) is its format's entry in `rollups/formats.py`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from usage_etl.rollups.formats import FORMATS, UnknownFormat, rollup_format
from usage_etl.rollups.schema import (
    DEFAULT_NETWORK_PATH,
    DIRECTIONS,
    FIELDS,
    INT_FIELDS,
    MAX_EVENT_ID_LENGTH,
    NETWORK_PATHS,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    STRING_FIELDS,
    TIME_FIELDS,
    RollupKey,
)
from usage_etl.settings import tuning
from usage_etl.usage.fetch import FOOTER_MAGICS, MIN_PARQUET_BYTES, Fetched, FooterColumn
from usage_etl.warehouse.build_tables import BUILD_PREFIX, drop_build_tables
from usage_etl.warehouse.client import Warehouse, WarehouseError

# Files per footer query and rows per INSERT: fewer, larger statements are faster (one INSERT
# reads several files in parallel and streams; its memory does not grow with its size).
FOOTER_FILES = 512
CHUNK_ROWS = tuning().native_chunk_rows  # USAGE_ETL_NATIVE_CHUNK_ROWS
# NDJSON.gz is chunked by listed (compressed) bytes: a truncated stream fails its chunk's query,
# so chunks are kept small enough that re-reading one costs little.
CHUNK_BYTES = tuning().native_chunk_bytes  # USAGE_ETL_NATIVE_CHUNK_BYTES
# Small files are *staged*: one statement reads a chunk of them from S3 into a Memory table as
# they are (the contract columns or the lines, plus `_path`, `_etag`, `_row_number`), a second
# runs the unchanged validating insert over that table. Read straight from s3(), every file is
# its own block of a few dozen rows, and each rule of `_rows_pass()` costs per block: on a demo
# day's 149 Parquet files (~54 rows each) the direct insert took 0.66-0.93 CPU-s, staged 0.29-0.40.
# Large files are blocks of thousands of rows already, and staging them would only copy them.
STAGE_ROWS = tuning().native_stage_rows  # USAGE_ETL_NATIVE_STAGE_ROWS; 0: never stage
STAGE_FILE_ROWS = 16_384  # a Parquet file is small up to this many rows (its footer's count)
STAGE_FILE_BYTES = 512 << 10  # an NDJSON.gz file is small up to this many listed bytes
STAGE_CHUNK_BYTES = 8 << 20  # listed NDJSON.gz bytes per staged chunk (~0.3M lines)
# ... and at most this many NDJSON.gz files: a truncated gzip stream fails its chunk's read, which
# is then repeated without it, so a smaller chunk re-reads fewer good files (Parquet files are
# screened by their footers first, and a failing Parquet read is rare).
STAGE_CHUNK_FILES = 64
# With the embedded engine, small files are fetched once by Python (usage/fetch.py) and read from
# the local copy with file(): footers and rows from one GET instead of two or three s3() reads.
# A Parquet file's footer row count is not known before its fetch, so it is small by its listed
# bytes: up to FETCH_PARQUET_BYTES. Simulated files measure ~120 bytes a row at ~50 rows (a demo
# file: ~6 KiB) and ~30 at ~2,300 rows, so 512 KiB is about STAGE_FILE_ROWS rows; the 10M shapes'
# files (~40k rows, ~1.2 MiB) keep the direct s3() read. Staged chunks still hold at most
# STAGE_ROWS footer rows. NDJSON.gz files are small by STAGE_FILE_BYTES as before.
FETCH = tuning().native_fetch  # USAGE_ETL_NATIVE_FETCH
# Fetched NDJSON.gz files are chunked by STAGE_CHUNK_BYTES alone (this many files at most): a
# truncated stream fails its chunk's local read, whose error names the local copy, and the
# rest of the chunk is read again from local disk, not from S3, so small chunks save nothing.
# Each chunk costs its own staging table, validating insert, counts and ledger insert: a demo
# day's three NDJSON chunks took 0.18 s of inserts where one takes 0.08 (`bench.small_day`).
FETCHED_CHUNK_FILES = 1024
FETCH_PARQUET_BYTES = 512 << 10

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_./=:-]+$")
_INT = {("INT64", "None"), ("INT32", "None")}
_INT_LOGICAL = re.compile(r"^Int\(bitWidth=(32|64), isSigned=true\)$")
_TIMESTAMP = re.compile(r"^Timestamp\(isAdjustedToUTC=(true|false), timeUnit=(micro|nano)seconds")
_STRING = ("BYTE_ARRAY", "String")
# The ClickHouse input formats this module has a plan for; rollups/formats.py names one per format.
PARQUET_INPUT, LINES_INPUT = "Parquet", "LineAsString"


def _read_as(name: str) -> str:
    """How ClickHouse reads a contract field: strings other than event_id as LowCardinality, so
    Parquet's dictionary pages stay dictionaries and every rule on them runs once per value."""
    if name in TIME_FIELDS:
        return "Nullable(DateTime64(6, 'UTC'))"
    if name in INT_FIELDS:
        return "Nullable(Int64)"
    return "Nullable(String)" if name == "event_id" else "LowCardinality(Nullable(String))"


STRUCTURE = ", ".join(f"{name} {_read_as(name)}" for name in FIELDS)


def brace_list(paths: list[str]) -> str:
    """Paths as one ClickHouse glob, `<shared folder>/{a,b,…}` (a single path as it is): the
    shared folder stays outside the braces, so s3() lists and file() reads only under it."""
    if len(paths) == 1:
        return paths[0]
    folder = posixpath.commonpath(paths)
    folder = f"{folder}/" if folder else ""
    return folder + "{" + ",".join(p[len(folder) :] for p in paths) + "}"


@dataclass(frozen=True)
class S3Access:
    """How ClickHouse reaches the landing bucket (path-style URLs, explicit credentials)."""

    endpoint: str
    access_key: str
    secret_key: str
    session_token: str = ""

    def url(self, bucket: str, keys: list[str]) -> str:
        return f"{self.endpoint.rstrip('/')}/{bucket}/{brace_list(keys)}"

    def function(self, fmt: str, structure: bool) -> str:
        """The s3() call; every value a query parameter, so no key or secret enters the SQL."""
        token = ", {s3_token:String}" if self.session_token else ""
        schema = ", {structure:String}" if structure else ""
        credentials = f"{{s3_key:String}}, {{s3_secret:String}}{token}"
        return f"s3({{s3_url:String}}, {credentials}, '{fmt}'{schema})"

    def parameters(self, url: str) -> dict[str, str]:
        params = {"s3_url": url, "s3_key": self.access_key, "s3_secret": self.secret_key}
        if self.session_token:
            params["s3_token"] = self.session_token
        return params


def s3_access_from_client(client) -> S3Access | None:
    """The endpoint and credentials boto3 resolved for `client`, for ClickHouse's s3()."""
    credentials = client._request_signer._credentials  # boto3 resolves them once per client
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return S3Access(client.meta.endpoint_url, frozen.access_key, frozen.secret_key,
                    frozen.token or "")  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    key: str
    etag: str
    rollup: RollupKey
    only_account: str | None = None
    size: int = 0  # bytes as listed: NDJSON chunks are sized by it (they have no footer)


@dataclass(frozen=True)
class Footer:
    key: str
    etag: str
    rows: int
    eligible: bool


@dataclass(frozen=True)
class Loaded:
    etag: str
    rows: int
    load_id: str  # the attempt's own load id, recorded in the ledger


@dataclass
class NativeResult:
    loaded: dict[str, Loaded]  # decided here
    reasons: dict[str, str]  # handed back to Python: key -> why (for logs and tests)

    def hand_back(self, key: str, why: str) -> None:
        self.reasons[key] = why


def eligible_parquet(columns: Iterable[FooterColumn]) -> bool:
    """Does ClickHouse read every contract column of this footer exactly as polars does?"""
    found: dict[str, tuple[str, str]] = {}
    for name, physical, logical, repetition in columns:
        if repetition or name in found:
            return False
        found[name] = (physical, logical)
    if any(name not in found for name in REQUIRED_FIELDS):
        return False
    for name, (physical, logical) in found.items():
        if name in STRING_FIELDS and (physical, logical) != _STRING:
            return False
        if name in INT_FIELDS and not (
            (physical, logical) in _INT
            or (physical in ("INT32", "INT64") and _INT_LOGICAL.match(logical))
        ):
            return False
        if name in TIME_FIELDS and not (physical == "INT64" and _TIMESTAMP.match(logical)):
            return False
    return True


def _quoted(values: Iterable[str]) -> str:
    return ", ".join("'" + v + "'" for v in values)  # constants of the contract, not data


# An object's key and ETag as the s3() virtual columns give them (_etag comes quoted).
_SOURCE_KEY = "substring(_path, {key_offset:UInt32})"
_SOURCE_ETAG = "trim(BOTH '\"' FROM _etag)"


def _rows_pass(utf8_checked: bool = False) -> str:
    """validate.py's rules as one condition; it must never accept what validate() rejects
    (it may reject more: such a file simply takes the Python path). Per-file expectations
    (node, hour, account) are arrays indexed by the file's position in {paths}: one lookup of
    `_path` per row instead of one per rule. `utf8_checked`: the caller already checked that
    every string is valid UTF-8 (an NDJSON line is checked whole)."""
    # A NULL string is valid (ifNull), as coalesce(f, '') would make it, without coalesce's
    # cost: it turns each LowCardinality column into a full column of strings per row, where
    # isValidUTF8 on the column itself is evaluated once per dictionary value (10M Parquet rows,
    # `issue` shape: the whole ingest 9.5-9.7 -> 8.2 s).
    strings_utf8 = " AND ".join(
        ["1"] if utf8_checked else [f"ifNull(isValidUTF8({f}), 1)" for f in STRING_FIELDS]
    )
    return f"""
        (transform(_path, {{paths:Array(String)}}, {{positions:Array(UInt32)}}, 0) AS file) > 0
        AND schema_version = {SCHEMA_VERSION}
        AND lengthUTF8(event_id) BETWEEN 1 AND {MAX_EVENT_ID_LENGTH}
        AND node_id = {{nodes:Array(String)}}[file]
        AND region != '' AND account_id != '' AND operation != '' AND artifact_kind != ''
        AND direction IN ({_quoted(sorted(DIRECTIONS))})
        AND (network_path IS NULL OR network_path IN ({_quoted(sorted(NETWORK_PATHS))}))
        AND window_start >= {{hour_starts:Array(DateTime64(6, 'UTC'))}}[file]
        AND window_start < {{hour_ends:Array(DateTime64(6, 'UTC'))}}[file]
        AND window_seconds > 0 AND 3600 % greatest(window_seconds, 1) = 0
        AND bytes >= 0 AND request_count >= 0
        AND emitted_at > toDateTime64(0, 6, 'UTC')
        AND emitted_at < toDateTime64('2262-01-01 00:00:00', 6, 'UTC')
        AND ({{accounts:Array(String)}}[file] = '' OR account_id = {{accounts:Array(String)}}[file])
        AND {_SOURCE_ETAG} = {{etags:Array(String)}}[file]
        AND {strings_utf8}
    """


# What both native inserts write, and the lineage every row carries (key, ETag, 1-based row).
_STAGED_COLUMNS = (
    "day, event_id, node_id, region, account_id, project_id, direction, operation, "
    "artifact_kind, network_path, window_start, window_seconds, bytes, request_count, "
    "emitted_at, source_key, source_etag, source_row, run_id, load_key"
)
_LINEAGE = f"{_SOURCE_KEY}, {_SOURCE_ETAG}, toUInt32(_row_number + 1)"
# load_key of a passing row (sql/005: sipHash128(source_key, source_etag, run_id)), one per file:
# a passing row was read at its file's listed ETag (_rows_pass), so the three are constants of
# the file. Computed once per file instead of once per row (the column's DEFAULT expands three
# LowCardinality columns for every row: ~3 s at 10M rows).
_FILE_LOAD_KEY = (
    "arrayMap((k, e) -> sipHash128(k, e, {load_id:String}), {keys:Array(String)}, "
    "{etags:Array(String)})[file]"
)


def insert_sql(table: str, source: str) -> str:
    return f"""
        INSERT INTO {table}
            ({_STAGED_COLUMNS})
        SELECT {{day:Date}}, event_id, node_id, region, account_id, coalesce(project_id, ''),
               direction, operation, artifact_kind,
               coalesce(network_path, '{DEFAULT_NETWORK_PATH}'), window_start,
               toUInt32(window_seconds), toUInt64(bytes), toUInt64(request_count), emitted_at,
               {_LINEAGE}, {{load_id:String}}, {_FILE_LOAD_KEY}
        FROM {source}
        WHERE {_rows_pass()}
        SETTINGS {S3_SETTINGS}, input_format_parquet_allow_missing_columns = 1,
                 input_format_parquet_max_block_size = 65536, min_insert_block_size_rows = 262144,
                 max_insert_threads = 2
    """


# -- NDJSON.gz ------------------------------------------------------------------------------------
# ClickHouse reads each line as text (`LineAsString`, so `_row_number` is the line number) and
# takes only lines of one plain shape, whose values it reads exactly as readers.py does: an
# object of contract keys without escapes, text fields holding a string without backslashes or
# control characters (or null), integer fields holding a JSON integer of at most 18 digits (or
# null), timestamps written `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)`. Any other line (escapes,
# unknown keys, numbers as text, other offsets, a blank line) is *rejected*: its file goes the
# Python way, which judges it line by line. JSONExtract keeps the first of duplicate keys, as
# readers.py does.

_WS = "[ \\t]*"
_TEXT_VALUE = '(?:null|"[^"\\\\\\x00-\\x1f]*")'
_INT_VALUE = "(?:null|-?(?:0|[1-9][0-9]{0,17}))"
_TEXT_KEYS = "|".join(STRING_FIELDS + TIME_FIELDS)
_INT_KEYS = "|".join(INT_FIELDS)
_PAIR = f'(?:"(?:{_TEXT_KEYS})":{_WS}{_TEXT_VALUE}|"(?:{_INT_KEYS})":{_WS}{_INT_VALUE})'
LINE_SHAPE = f"^\\{{{_WS}(?:{_PAIR}(?:{_WS},{_WS}{_PAIR})*)?{_WS}\\}}$"
TIME_SHAPE = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.][0-9]{1,6})?(?:Z|[+]00:00)$"
)
_JSON_TUPLE = (
    "Tuple("
    + ", ".join(
        f"{name} Nullable({'Int64' if name in INT_FIELDS else 'String'})" for name in FIELDS
    )
    + ")"
)


def rejected_id(load_id: str) -> str:
    """The load id of an attempt's rejected lines: no ledger entry ever points to it."""
    return f"{load_id}.rejected"


def _ndjson_time(name: str) -> str:
    # The round trip refuses what parseDateTime64BestEffort would roll over (Feb 30, 24:00, :60).
    parsed = f"parseDateTime64BestEffortOrNull(v.{name}, 6, 'UTC')"
    return f"""if(match(v.{name}, {{time_shape:String}})
                  AND formatDateTime({parsed}, '%Y-%m-%dT%H:%i:%S', 'UTC') = left(v.{name}, 19),
                  {parsed}, NULL) AS {name}"""


def _ndjson_value(name: str) -> str:
    if name in TIME_FIELDS:
        return _ndjson_time(name)
    if name in INT_FIELDS or name == "event_id":
        return f"v.{name} AS {name}"
    return f"toLowCardinality(v.{name}) AS {name}"


def ndjson_insert_sql(table: str, function: str) -> str:
    """Every line is inserted: passing lines under the attempt's load id, the others under its
    rejected id, so one read of the file both loads it and counts its lines.

    One insert thread: parsing the JSON is the bottleneck, not the sink, so a second part writer
    only added memory (10M lines: peak 0.95-0.99 GiB vs 1.00-1.06, time within noise)."""
    values = ",\n               ".join(_ndjson_value(name) for name in FIELDS)
    return f"""
        INSERT INTO {table}
            ({_STAGED_COLUMNS})
        SELECT {{day:Date}}, ifNull(event_id, ''), ifNull(node_id, ''), ifNull(region, ''),
               ifNull(account_id, ''), ifNull(project_id, ''), ifNull(direction, ''),
               ifNull(operation, ''), ifNull(artifact_kind, ''),
               ifNull(network_path, '{DEFAULT_NETWORK_PATH}'),
               ifNull(window_start, toDateTime64(0, 6, 'UTC')), toUInt32(ifNull(window_seconds, 0)),
               toUInt64(ifNull(bytes, 0)), toUInt64(ifNull(request_count, 0)),
               ifNull(emitted_at, toDateTime64(0, 6, 'UTC')),
               {_LINEAGE},
               if((shaped AND ({_rows_pass(utf8_checked=True)})) AS passes, {{load_id:String}},
                  {{rejected_id:String}}),
               if(passes, {_FILE_LOAD_KEY},
                  sipHash128({_SOURCE_KEY}, {_SOURCE_ETAG}, {{rejected_id:String}}))
        FROM (
            SELECT _path, _etag, _row_number,
                   match(line, {{line_shape:String}}) AND isValidUTF8(line) AS shaped,
                   JSONExtract(if(shaped, line, '{{}}'), '{_JSON_TUPLE}') AS v,
                   {values}
            FROM {function}
        )
        SETTINGS {S3_SETTINGS}, min_insert_block_size_rows = 262144, max_insert_threads = 1
    """


class Unreachable(RuntimeError):
    """ClickHouse cannot reach the landing endpoint: the whole day goes the Python way."""


# Keys in `date=`/`hour=`/`node=` folders are not columns; few, fast retries, because a failed
# chunk is split and retried and the Python path remains.
S3_SETTINGS = (
    "use_hive_partitioning = 0, s3_retry_attempts = 3, s3_max_single_read_retries = 3, "
    "s3_connect_timeout_ms = 5000"
)
# Errors about the endpoint or the credentials, not about one object: stop asking ClickHouse.
_UNREACHABLE = re.compile(
    r"Code: (1000|209|210)\b|Connection refused|Timeout|timed out|AccessDenied|Forbidden|"
    r"InvalidAccessKeyId|SignatureDoesNotMatch|HTTP response code: 40[13]\b",
    re.I,
)


# Failures of the warehouse itself, not of the objects read: splitting the chunk cannot help,
# and each retry would fill the disk (or memory) again. The run fails with ClickHouse's words.
_WAREHOUSE_FAILURE = re.compile(
    r"Code: (241|243)\b|NOT_ENOUGH_SPACE|MEMORY_LIMIT_EXCEEDED|No space left on device"
)


def _raise_unless_about_the_objects(exc: WarehouseError) -> None:
    if _WAREHOUSE_FAILURE.search(str(exc)):
        raise exc
    if exc.transient or _UNREACHABLE.search(str(exc)):
        raise Unreachable(str(exc)) from None


def _footers(
    warehouse: Warehouse, access: S3Access, bucket: str, keys: list[str]
) -> list[Footer] | None:
    """Footers of `keys`, or None when the query failed (one unreadable file fails it)."""
    try:
        rows = warehouse.query_rows(
            f"""
            SELECT {_SOURCE_KEY}, {_SOURCE_ETAG}, num_rows,
                   arrayMap(c -> (c.name, c.physical_type, c.logical_type,
                                  c.max_repetition_level), columns)
            FROM {access.function("ParquetMetadata", structure=False)}
            SETTINGS {S3_SETTINGS}
            """,
            {**access.parameters(access.url(bucket, keys)), "key_offset": len(bucket) + 2},
        )
    except WarehouseError as exc:
        _raise_unless_about_the_objects(exc)
        return None
    return [Footer(key, etag, rows, eligible_parquet(cols)) for key, etag, rows, cols in rows]


def _local_footers(warehouse: Warehouse, files: list[Fetched]) -> list[Footer] | None:
    """Footers of fetched files, read from their local copies (`file()`); their ETags are the
    ones their GETs returned. None when the query failed."""
    by_path = {f.path: f for f in files}
    try:
        rows = warehouse.query_rows(
            f"""
            SELECT _path, num_rows,
                   arrayMap(c -> (c.name, c.physical_type, c.logical_type,
                                  c.max_repetition_level), columns)
            FROM {LOCAL_FUNCTION.format(fmt="ParquetMetadata", structure="")}
            SETTINGS {S3_SETTINGS}
            """,
            {"file_glob": brace_list([f.path for f in files])},
        )
    except WarehouseError as exc:
        _raise_unless_about_the_objects(exc)
        return None
    return [
        Footer(by_path[path].key, by_path[path].etag, n, eligible_parquet(cols))
        for path, n, cols in rows
        if path in by_path
    ]


def _fetched_footer(fetched: Fetched) -> Footer:
    """The footer fetch.py read from a copy and judged with `eligible_parquet`."""
    footer = fetched.footer
    assert footer is not None
    return Footer(fetched.key, fetched.etag, footer.rows, footer.eligible)


# The table function reading fetched files; every path a query parameter.
LOCAL_FUNCTION = "file({{file_glob:String}}, '{fmt}'{structure})"


def screen_fetched(files: list[Fetched]) -> set[str]:
    """The fetched keys ClickHouse's footer reader must refuse (too short, no footer magic):
    `_without_footer_magic`'s rule, applied to the bytes as they were fetched."""
    return {f.key for f in files if not f.footer_magic}


# A failed footer group whose listed bytes are at most this is screened first: one query reads
# its files whole (`RawBLOB`) and sets aside those without a Parquet footer magic (truncated
# uploads, the usual culprit), instead of ~2·log2(n) footer queries halving the group.
SCREEN_BYTES = 64 << 20
# The same rule as the fetched bytes' screen (fetch.py): Arrow's footer reader refuses a file
# shorter than MIN_PARQUET_BYTES or not ending in one of FOOTER_MAGICS.
_FOOTER_MAGICS = tuple(magic.decode() for magic in FOOTER_MAGICS)


def _without_footer_magic(
    warehouse: Warehouse, access: S3Access, bucket: str, keys: list[str]
) -> set[str] | None:
    """The keys ClickHouse's footer reader must refuse (too short, no footer magic), or None
    when the screening query itself failed."""
    try:
        rows = warehouse.query_rows(
            f"""
            SELECT {_SOURCE_KEY}
            FROM {access.function("RawBLOB", structure=False)}
            WHERE length(raw_blob) < {MIN_PARQUET_BYTES}
               OR right(raw_blob, 4) NOT IN ({_quoted(_FOOTER_MAGICS)})
            SETTINGS {S3_SETTINGS}
            """,
            {**access.parameters(access.url(bucket, keys)), "key_offset": len(bucket) + 2},
        )
    except WarehouseError as exc:
        _raise_unless_about_the_objects(exc)
        return None
    return {key for (key,) in rows} & set(keys)


def read_footers(
    warehouse: Warehouse,
    access: S3Access,
    bucket: str,
    keys: list[str],
    sizes: dict[str, int] | None = None,
    local: dict[str, Fetched] | None = None,
) -> dict[str, Footer]:
    """Footers of every readable file. A group that fails (one unreadable file fails it, and
    ClickHouse's error does not name the file) is first screened for files without a footer
    magic when it is small (`sizes`: listed bytes, SCREEN_BYTES); what still fails is split in
    halves until the unreadable files stand alone: a few queries per bad file instead of one
    query per file of its group (a demo day with one truncated file of ~150 took ~150 footer
    queries, then ~17 halving, now 3). A file set aside by the screen has no footer here, as a
    file failing its footer query alone has none: it goes the Python way either way.

    With `local` (fetched files, screened already: `screen_fetched`), the footers are read
    from the local copies."""
    footers: dict[str, Footer] = {}
    groups = collections.deque(
        (keys[start : start + FOOTER_FILES], sizes is None or local is not None)
        for start in range(0, len(keys), FOOTER_FILES)
    )
    while groups:
        group, screened = groups.popleft()
        found = (
            _footers(warehouse, access, bucket, group) if local is None
            else _local_footers(warehouse, [local[k] for k in group])
        )  # fmt: skip
        if found is not None:
            footers.update({f.key: f for f in found})
            continue
        if len(group) <= 1:
            continue
        if not screened and sum(sizes.get(k, 0) for k in group) <= SCREEN_BYTES:
            unreadable = _without_footer_magic(warehouse, access, bucket, group)
            if unreadable:
                rest = [k for k in group if k not in unreadable]
                if rest:
                    groups.appendleft((rest, True))
                continue
        middle = len(group) // 2
        groups.extendleft([(group[middle:], True), (group[:middle], True)])
    return footers


def _chunks(
    candidates: list[Candidate],
    weight: Callable[[Candidate], int],
    limit: int,
    max_files: int | None = None,
) -> Iterator[list[Candidate]]:
    chunk: list[Candidate] = []
    total = 0
    for candidate in candidates:
        chunk.append(candidate)
        total += weight(candidate)
        if total >= limit or len(chunk) == max_files:
            yield chunk
            chunk, total = [], 0
    if chunk:
        yield chunk


def _split(
    files: list[Candidate], is_small: Callable[[Candidate], bool]
) -> tuple[list[Candidate], list[Candidate]]:
    """(small, large): the files to stage and those read directly (all, when STAGE_ROWS is 0)."""
    small: list[Candidate] = []
    large: list[Candidate] = []
    for candidate in files:
        (small if STAGE_ROWS and is_small(candidate) else large).append(candidate)
    return small, large


def plain_key(key: str) -> bool:
    """Keys ClickHouse can name in a `{a,b,…}` list without escaping."""
    return bool(_PLAIN_KEY.match(key)) and ".." not in key


def native_input(candidate: Candidate) -> str | None:
    """The ClickHouse input format the registry names for the candidate's format, or None
    (Python only). A format that names one this module has no plan for is a programming error."""
    entry = rollup_format(candidate.rollup.format)
    if entry.native not in (None, PARQUET_INPUT, LINES_INPUT):
        raise UnknownFormat(
            f"rollup format {entry.name!r} names ClickHouse input format {entry.native!r}; "
            f"native.py reads only {PARQUET_INPUT} and {LINES_INPUT}"
        )
    return entry.native


def fetch_suffix(candidate: Candidate) -> str | None:
    """The local file suffix of a candidate the embedded engine reads from a fetched copy
    (FETCH, FETCH_PARQUET_BYTES, STAGE_FILE_BYTES), or None: read from s3() (or by Python)."""
    if not (FETCH and STAGE_ROWS) or not plain_key(candidate.key):
        return None
    native = native_input(candidate)
    limit = {PARQUET_INPUT: FETCH_PARQUET_BYTES, LINES_INPUT: STAGE_FILE_BYTES}.get(native or "")
    if limit is None or candidate.size > limit:
        return None
    return rollup_format(candidate.rollup.format).suffix


def _fetch_failure(fetched: Fetched, candidate: Candidate) -> str:
    """Why a fetched candidate goes back to Python before any query, or ""."""
    if not fetched.path:
        return f"fetch failed: {fetched.error}"
    if fetched.etag != candidate.etag:
        return "etag changed"
    if fetched.truncated_gzip:  # its read would fail its chunk: the reason s3() reads give it
        return "ClickHouse could not read it"
    return ""


@dataclass(frozen=True)
class Chunk:
    fmt: str  # a registered format's name (rollups/formats.py)
    files: list[Candidate]
    staged: bool = False  # small files: read into a staging table first (STAGE_ROWS)
    local: dict[str, Fetched] | None = None  # staged from these fetched copies, not from s3()

    def halves(self) -> list[Chunk]:
        middle = len(self.files) // 2
        return [self.but(self.files[:middle]), self.but(self.files[middle:])]

    def but(self, files: list[Candidate]) -> Chunk:
        return Chunk(self.fmt, files, self.staged, self.local)


@dataclass(frozen=True)
class FileCounts:
    etag: str  # "" when two versions were read within one query
    passed: int
    rejected: int = 0


def load_objects(
    warehouse: Warehouse,
    access: S3Access,
    bucket: str,
    day: date,
    candidates: list[Candidate],
    load_id: str,
    on_chunk: Callable[[dict[str, Loaded]], None] | None = None,
    fetched: dict[str, Fetched] | None = None,
) -> NativeResult:
    """Load what ClickHouse can decide alone; return the rest for the Python path.

    A chunk whose query fails is split in halves and retried, so one corrupt file costs a
    few extra queries and goes to Python alone. Every attempt inserts under its own load id
    (`<load_id>.<n>`): rows of a failed attempt never match a ledger entry.

    `fetched`: local copies of small files (fetch.py, embedded engine only). Their footers and
    rows are read from the copies; a copy whose GET failed or returned another ETag than the
    listing's goes back to Python before any query."""
    result = NativeResult({}, {})
    inputs = {c.key: native_input(c) for c in candidates}
    local: dict[str, Fetched] = {}
    for candidate in candidates:
        copy = (fetched or {}).get(candidate.key)
        if inputs[candidate.key] is None:
            result.hand_back(candidate.key, "no native reader")
        elif copy is not None:
            why = _fetch_failure(copy, candidate)
            if why:
                result.hand_back(candidate.key, why)
            else:
                local[candidate.key] = copy
    parquet = [c for c in candidates
               if inputs[c.key] == PARQUET_INPUT and c.key not in result.reasons]  # fmt: skip
    remote = [c for c in parquet if c.key not in local]
    footers = (
        read_footers(warehouse, access, bucket, [c.key for c in remote],
                     sizes={c.key: c.size for c in remote})
        if remote else {}
    )  # fmt: skip
    screened = screen_fetched([local[c.key] for c in parquet if c.key in local])
    readable = [c.key for c in parquet if c.key in local and c.key not in screened]
    footers |= {key: _fetched_footer(local[key]) for key in readable if local[key].footer}
    unread = [key for key in readable if not local[key].footer]
    if unread:
        footers |= read_footers(warehouse, access, bucket, unread, local=local)
    ready: list[Candidate] = []
    for candidate in parquet:
        footer = footers.get(candidate.key)
        why = (
            "unreadable footer" if footer is None
            else "column types" if not footer.eligible
            else "etag changed" if footer.etag != candidate.etag
            else ""
        )  # fmt: skip
        if why:
            result.hand_back(candidate.key, why)
        else:
            ready.append(candidate)
    queue: collections.deque[Chunk] = collections.deque()
    ready_keys = {c.key for c in ready}
    for entry in FORMATS:  # chunks of one format each, in the registry's order
        files = [c for c in candidates
                 if c.rollup.format == entry.name and c.key not in result.reasons]  # fmt: skip
        copies = [c for c in files if c.key in local]
        files = [c for c in files if c.key not in local]
        if entry.native == PARQUET_INPUT:
            ready_files = [c for c in files if c.key in ready_keys]
            rows = lambda c: footers[c.key].rows  # noqa: E731
            small, large = _split(ready_files, lambda c: footers[c.key].rows <= STAGE_FILE_ROWS)
            fetched_chunks = _chunks([c for c in copies if c.key in ready_keys], rows, STAGE_ROWS)
            staged = _chunks(small, rows, STAGE_ROWS)
            direct = _chunks(large, rows, CHUNK_ROWS)
        elif entry.native == LINES_INPUT:  # no footer: sized by listed (compressed) bytes
            size = lambda c: c.size  # noqa: E731
            small, large = _split(files, lambda c: c.size <= STAGE_FILE_BYTES)
            fetched_chunks = _chunks(copies, size, STAGE_CHUNK_BYTES, FETCHED_CHUNK_FILES)
            staged = _chunks(small, size, STAGE_CHUNK_BYTES, STAGE_CHUNK_FILES)
            direct = _chunks(large, size, CHUNK_BYTES)
        else:
            continue  # Python only: handed back above
        queue.extend(Chunk(entry.name, part, staged=True, local=local) for part in fetched_chunks)
        queue.extend(Chunk(entry.name, part, staged=True) for part in staged)
        queue.extend(Chunk(entry.name, part) for part in direct)
    attempt = 0
    while queue:
        chunk = queue.popleft()
        attempt += 1
        attempt_id = f"{load_id}.{attempt}"
        counts = _insert_chunk(warehouse, access, bucket, day, chunk, attempt_id)
        if isinstance(counts, str):
            culprit = _named_file(chunk, bucket, counts)
            if culprit is None and len(chunk.files) > 1:
                queue.extendleft(reversed(chunk.halves()))
                continue
            culprit = culprit or chunk.files[0]
            result.hand_back(culprit.key, "ClickHouse could not read it")
            rest = [c for c in chunk.files if c is not culprit]
            if rest:
                queue.appendleft(chunk.but(rest))
            continue
        decided: dict[str, Loaded] = {}
        for candidate in chunk.files:
            footer = footers.get(candidate.key)
            why = _why_handed_back(candidate, counts.get(candidate.key),
                                   footer.rows if footer else None)  # fmt: skip
            if why:
                result.hand_back(candidate.key, why)
            else:
                passed = counts[candidate.key].passed if candidate.key in counts else 0
                decided[candidate.key] = Loaded(candidate.etag, passed, attempt_id)
        result.loaded.update(decided)
        if on_chunk is not None:
            on_chunk(decided)
    return result


def _named_file(chunk: Chunk, bucket: str, error: str) -> Candidate | None:
    """The file a failed read names ("… (in file/uri bucket/key) …"): only it goes back to
    Python and the rest of the chunk is retried as it is, instead of in halves."""
    named = [
        c for c in chunk.files
        if (f"{chunk.local[c.key].path})" if chunk.local else f"{bucket}/{c.key})") in error
    ]  # fmt: skip
    return named[0] if len(named) == 1 else None


def _why_handed_back(
    candidate: Candidate, counts: FileCounts | None, footer_rows: int | None
) -> str:
    """ "" when every row of the file passed at the listed ETag; else why Python must judge it.
    A Parquet file must yield its footer's row count; an NDJSON file (no footer) must yield
    at least one line and no rejected one, since a file ClickHouse did not read yields none."""
    if counts is None:  # nothing of the file was read: fine only for an empty Parquet file
        if footer_rows is None:
            return "no rows read"
        return "" if footer_rows == 0 else "rows rejected"
    if counts.etag != candidate.etag:
        return "etag changed"
    if counts.rejected or (footer_rows is not None and counts.passed != footer_rows):
        return "rows rejected"
    return ""


def _command(warehouse: Warehouse, sql: str, params: dict) -> None:
    """Run `sql` with only the parameters it names: the client escapes every value it is given
    character by character (the keys, paths and ETags of a chunk, the S3 URL listing them), and
    the staged pair of statements each needs only part of them."""
    warehouse.command(sql, {k: v for k, v in params.items() if f"{{{k}:" in sql})


def stage_table_name(load_id: str) -> str:
    """The staging table of one attempt: BUILD_PREFIX, so a run killed between its create and
    its drop leaves a table the stale build-table sweep drops (build_tables.py)."""
    return f"{BUILD_PREFIX}stage_{hashlib.sha256(load_id.encode()).hexdigest()[:16]}"


# What a staging table holds: the columns as s3() reads them (the structure, or the lines), and
# the lineage columns named as s3()'s virtual columns, so the validating SQL reads either source.
_STAGE_LINEAGE = "_path LowCardinality(String), _etag LowCardinality(String), _row_number Int64"
_STAGE_COLUMNS = {
    PARQUET_INPUT: (f"{STRUCTURE}, {_STAGE_LINEAGE}", ", ".join(FIELDS)),
    LINES_INPUT: (f"line String, {_STAGE_LINEAGE}", "line"),
}


# A staged Parquet file is one small row group: parsing it on several threads, or prefetching
# its next row group, only costs set-up per file; the chunk's files are still read in parallel
# (max_threads). 1,024 fetched copies of ~500 rows: 0.52 -> 0.40 s, 0.84 -> 0.77 CPU-s.
_STAGE_READ = {
    PARQUET_INPUT: ", max_parsing_threads = 1, input_format_parquet_enable_row_group_prefetch = 0",
    LINES_INPUT: "",
}


def _staged_insert(
    warehouse: Warehouse,
    native: str,
    source: str,
    params: dict,
    insert: Callable[[str, str], str],
    load_id: str,
    lineage: str = "_path, _etag",
) -> str | None:
    """Read the chunk's objects into a staging table in one statement (the only one that reads
    S3: its error names the file, as the direct insert's does), then run the validating insert
    over it. The table is a node-local Memory table (a run talks to one server throughout,
    docs/scaling.md), dropped on success and on failure. Returns the error text of a failed read
    (or of a validation failing otherwise than for the warehouse itself), if any."""
    stage_name = stage_table_name(load_id)
    stage = warehouse.table(stage_name)
    columns, names = _STAGE_COLUMNS[native]
    try:
        warehouse.command(f"CREATE OR REPLACE TABLE {stage} ({columns}) ENGINE = Memory")
        failed = None
        try:
            _command(
                warehouse,
                f"""
                INSERT INTO {stage}
                SELECT {names}, {lineage}, _row_number FROM {source}
                SETTINGS {S3_SETTINGS}, input_format_parquet_allow_missing_columns = 1,
                         input_format_parquet_max_block_size = 65536{_STAGE_READ[native]}
                """,
                params,
            )
        except WarehouseError as exc:
            _raise_unless_about_the_objects(exc)
            failed = str(exc)
        if failed is None:
            try:
                _command(warehouse, insert(warehouse.table("rollup_rows"), stage), params)
            except WarehouseError as exc:
                # The objects were read already: a failure of the warehouse raises here. Any
                # other error is treated as the direct insert treats it (split, hand back).
                _raise_unless_about_the_objects(exc)
                failed = str(exc)
    except BaseException:
        with contextlib.suppress(WarehouseError):  # the run fails with the first error
            drop_build_tables(warehouse, stage_name)
        raise
    drop_build_tables(warehouse, stage_name)
    return failed


def _insert_chunk(
    warehouse: Warehouse,
    access: S3Access,
    bucket: str,
    day: date,
    chunk: Chunk,
    load_id: str,
) -> dict[str, FileCounts] | str:
    """Insert a chunk's rows; per key, what was read. On failure, ClickHouse's error text."""
    files = chunk.files
    keys = [c.key for c in files]
    params = {
        **access.parameters(access.url(bucket, keys)),
        "day": day,
        "key_offset": len(bucket) + 2,
        "load_id": load_id,
        "paths": [f"{bucket}/{c.key}" for c in files],
        "positions": list(range(1, len(files) + 1)),
        "nodes": [c.rollup.node_id for c in files],
        "hour_starts": [c.rollup.hour_start for c in files],
        "hour_ends": [c.rollup.hour_end for c in files],
        "accounts": [c.only_account or "" for c in files],
        "keys": keys,
        "etags": [c.etag for c in files],
    }
    native = rollup_format(chunk.fmt).native
    source = access.function(native, structure=native == PARQUET_INPUT)
    lineage = "_path, _etag"
    if chunk.local is not None:  # fetched copies: `_path` and `_etag` as s3() would give them
        copies = [chunk.local[c.key] for c in files]
        source = LOCAL_FUNCTION.format(
            fmt=native, structure=", {structure:String}" if native == PARQUET_INPUT else ""
        )
        lineage = (
            "transform(_path, {local_paths:Array(String)}, {paths:Array(String)}, ''), "
            "transform(_path, {local_paths:Array(String)}, {etags:Array(String)}, '')"
        )
        params |= {"file_glob": brace_list([f.path for f in copies]),
                   "local_paths": [f.path for f in copies]}  # fmt: skip
    if native == PARQUET_INPUT:
        params["structure"] = STRUCTURE
    else:
        params |= {"line_shape": LINE_SHAPE, "time_shape": TIME_SHAPE,
                   "rejected_id": rejected_id(load_id)}  # fmt: skip
    insert = insert_sql if native == PARQUET_INPUT else ndjson_insert_sql
    if chunk.staged:
        failed = _staged_insert(warehouse, native, source, params, insert, load_id, lineage)
        if failed is not None:
            return failed
    else:
        try:
            _command(warehouse, insert(warehouse.table("rollup_rows"), source), params)
        except WarehouseError as exc:
            _raise_unless_about_the_objects(exc)
            return str(exc)
    return _file_counts(warehouse, day, load_id)


def _file_counts(warehouse: Warehouse, day: date, load_id: str) -> dict[str, FileCounts]:
    """Per key, the rows an attempt inserted: passed (its load id) and rejected (its rejected
    id), at the ETag read. Grouped by load_key, one fixed-size value per (key, ETag, load id)
    (sql/005): ~20 ms at 10M staged rows, where grouping by key and ETag (two LowCardinality
    strings) took ~50, once per chunk. A key read at two ETags within the query counts as
    rejected, with no ETag."""
    rows = warehouse.query_rows(
        f"""
        SELECT any(source_key), any(source_etag), any(run_id) = {{load_id:String}}, count()
        FROM {warehouse.table("rollup_rows")}
        WHERE day = {{day:Date}} AND run_id IN ({{load_id:String}}, {{rejected_id:String}})
        GROUP BY load_key
        """,
        {"day": day, "load_id": load_id, "rejected_id": rejected_id(load_id)},
    )
    counts: dict[str, FileCounts] = {}
    for key, etag, passed, read in rows:
        seen = counts.get(key, FileCounts(etag, 0))
        if seen.etag != etag:
            counts[key] = FileCounts("", 0, 1)
        elif passed:
            counts[key] = FileCounts(etag, seen.passed + read, seen.rejected)
        else:
            counts[key] = FileCounts(etag, seen.passed, seen.rejected + read)
    return counts
