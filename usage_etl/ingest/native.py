"""The fast path for Parquet: ClickHouse reads validated objects from S3 itself.

Python (`readers.py` + `validate.py`) stays the authority on every contract rule. This path only
takes the files where ClickHouse is known to reach the same verdict with less work, and hands
everything else back:

1. **Footers.** One `ParquetMetadata` query per group of files returns each file's ETag, row
   count and column types. A file is *eligible* when every contract column has a type whose
   values ClickHouse reads exactly as polars does (UTF-8 strings, signed 32/64-bit ints, micro-
   or nanosecond timestamps); anything else (other types, nesting, missing columns) goes the
   Python way, which quarantines it with the precise rule.
2. **Rows.** One `INSERT INTO rollup_rows SELECT … FROM s3(<explicit keys>)` per chunk keeps
   only rows that pass every rule, written as a condition at least as strict as validate.py's.
   `_path`, `_etag` and `_row_number` give each row its lineage.
3. **Verdict per file.** A file whose loaded rows equal its footer's row count, read at the
   listed ETag, is decided here: every row passed, exactly as validate.py would have found. A
   file with any rejected row, an ETag that moved, or a chunk whose query failed (a corrupt
   page, S3 trouble) goes back to the Python path, which re-reads it under the run's own load
   id. Rows this path inserted for such files carry the fast path's load id, which no ledger
   entry points to, so they never count.

Only objects of nodes with no registry restriction whose keys are plain (no glob characters)
take this path; self-hosted and unregistered nodes are judged in Python.
"""

from __future__ import annotations

import collections
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from usage_etl.ingest.readers import INT_FIELDS, STRING_FIELDS, TIME_FIELDS
from usage_etl.rollups.schema import (
    DEFAULT_NETWORK_PATH,
    DIRECTIONS,
    FIELDS,
    MAX_EVENT_ID_LENGTH,
    NETWORK_PATHS,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    RollupKey,
)
from usage_etl.warehouse.client import Warehouse, WarehouseError

# Files per footer query and rows per INSERT: fewer, larger statements are faster (one INSERT
# reads several files in parallel and streams; its memory does not grow with its size).
FOOTER_FILES = 512
CHUNK_ROWS = int(os.environ.get("USAGE_ETL_NATIVE_CHUNK_ROWS", "50000000"))

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_./=:-]+$")
_INT = {("INT64", "None"), ("INT32", "None")}
_INT_LOGICAL = re.compile(r"^Int\(bitWidth=(32|64), isSigned=true\)$")
_TIMESTAMP = re.compile(r"^Timestamp\(isAdjustedToUTC=(true|false), timeUnit=(micro|nano)seconds")
_STRING = ("BYTE_ARRAY", "String")


def _read_as(name: str) -> str:
    """How ClickHouse reads a contract field: strings other than event_id as LowCardinality, so
    Parquet's dictionary pages stay dictionaries and every rule on them runs once per value."""
    if name in TIME_FIELDS:
        return "Nullable(DateTime64(6, 'UTC'))"
    if name in INT_FIELDS:
        return "Nullable(Int64)"
    return "Nullable(String)" if name == "event_id" else "LowCardinality(Nullable(String))"


STRUCTURE = ", ".join(f"{name} {_read_as(name)}" for name in FIELDS)


@dataclass(frozen=True)
class S3Access:
    """How ClickHouse reaches the landing bucket (path-style URLs, explicit credentials)."""

    endpoint: str
    access_key: str
    secret_key: str
    session_token: str = ""

    def url(self, bucket: str, keys: list[str]) -> str:
        if len(keys) == 1:
            return f"{self.endpoint.rstrip('/')}/{bucket}/{keys[0]}"
        # The shared folder stays outside the braces: ClickHouse lists only under it.
        folder = posixpath.commonpath(keys)
        folder = f"{folder}/" if folder else ""
        tail = "{" + ",".join(k[len(folder) :] for k in keys) + "}"
        return f"{self.endpoint.rstrip('/')}/{bucket}/{folder}{tail}"

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


def eligible_parquet(columns: Iterable[tuple[str, str, str, int]]) -> bool:
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


def _rows_pass() -> str:
    """validate.py's rules as one condition; it must never accept what validate() rejects
    (it may reject more: such a file simply takes the Python path). Per-file expectations
    (node, hour, account) are arrays indexed by the file's position in {paths}: one lookup of
    `_path` per row instead of one per rule."""
    strings_utf8 = " AND ".join(f"isValidUTF8(coalesce({f}, ''))" for f in STRING_FIELDS)
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
        AND {strings_utf8}
    """


def insert_sql(table: str, source: str) -> str:
    return f"""
        INSERT INTO {table}
            (day, event_id, node_id, region, account_id, project_id, direction, operation,
             artifact_kind, network_path, window_start, window_seconds, bytes, request_count,
             emitted_at, source_key, source_etag, source_row, run_id)
        SELECT {{day:Date}}, event_id, node_id, region, account_id, coalesce(project_id, ''),
               direction, operation, artifact_kind,
               coalesce(network_path, '{DEFAULT_NETWORK_PATH}'), window_start,
               toUInt32(window_seconds), toUInt64(bytes), toUInt64(request_count), emitted_at,
               substring(_path, {{key_offset:UInt32}}), trim(BOTH '"' FROM _etag),
               toUInt32(_row_number + 1), {{load_id:String}}
        FROM {source}
        WHERE {_rows_pass()}
        SETTINGS {S3_SETTINGS}, input_format_parquet_allow_missing_columns = 1,
                 input_format_parquet_max_block_size = 65536, min_insert_block_size_rows = 262144,
                 max_insert_threads = 2
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


def _raise_if_unreachable(exc: WarehouseError) -> None:
    if exc.transient or _UNREACHABLE.search(str(exc)):
        raise Unreachable(str(exc)) from None


def _footers(
    warehouse: Warehouse, access: S3Access, bucket: str, keys: list[str]
) -> list[Footer] | None:
    """Footers of `keys`, or None when the query failed (one unreadable file fails it)."""
    try:
        rows = warehouse.query_rows(
            f"""
            SELECT substring(_path, {{key_offset:UInt32}}), trim(BOTH '"' FROM _etag), num_rows,
                   arrayMap(c -> (c.name, c.physical_type, c.logical_type,
                                  c.max_repetition_level), columns)
            FROM {access.function("ParquetMetadata", structure=False)}
            SETTINGS {S3_SETTINGS}
            """,
            {**access.parameters(access.url(bucket, keys)), "key_offset": len(bucket) + 2},
        )
    except WarehouseError as exc:
        _raise_if_unreachable(exc)
        return None
    return [Footer(key, etag, rows, eligible_parquet(cols)) for key, etag, rows, cols in rows]


def read_footers(
    warehouse: Warehouse, access: S3Access, bucket: str, keys: list[str]
) -> dict[str, Footer]:
    """Footers of every readable file; a group that fails is retried file by file."""
    footers: dict[str, Footer] = {}
    for start in range(0, len(keys), FOOTER_FILES):
        group = keys[start : start + FOOTER_FILES]
        found = _footers(warehouse, access, bucket, group)
        if found is None:
            found = [f for key in group for f in (_footers(warehouse, access, bucket, [key]) or [])]
        footers.update({f.key: f for f in found})
    return footers


def _chunks(candidates: list[Candidate], footers: dict[str, Footer]) -> Iterator[list[Candidate]]:
    chunk: list[Candidate] = []
    rows = 0
    for candidate in candidates:
        chunk.append(candidate)
        rows += footers[candidate.key].rows
        if rows >= CHUNK_ROWS:
            yield chunk
            chunk, rows = [], 0
    if chunk:
        yield chunk


def plain_key(key: str) -> bool:
    """Keys ClickHouse can name in a `{a,b,…}` list without escaping."""
    return bool(_PLAIN_KEY.match(key)) and ".." not in key


def load_parquet(
    warehouse: Warehouse,
    access: S3Access,
    bucket: str,
    day: date,
    candidates: list[Candidate],
    load_id: str,
    on_chunk: Callable[[dict[str, Loaded]], None] | None = None,
) -> NativeResult:
    """Load what ClickHouse can decide alone; return the rest for the Python path.

    A chunk whose query fails is split in halves and retried, so one corrupt file costs a
    few extra queries and goes to Python alone. Every attempt inserts under its own load id
    (`<load_id>.<n>`): rows of a failed attempt never match a ledger entry."""
    result = NativeResult({}, {})
    footers = read_footers(warehouse, access, bucket, [c.key for c in candidates])
    ready: list[Candidate] = []
    for candidate in candidates:
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
    queue = collections.deque(_chunks(ready, footers))
    attempt = 0
    while queue:
        chunk = queue.popleft()
        attempt += 1
        attempt_id = f"{load_id}.{attempt}"
        loaded = _insert_chunk(warehouse, access, bucket, day, chunk, attempt_id)
        if loaded is None:
            if len(chunk) > 1:
                queue.extendleft([chunk[len(chunk) // 2 :], chunk[: len(chunk) // 2]])
            else:
                result.hand_back(chunk[0].key, "ClickHouse could not read it")
            continue
        decided: dict[str, Loaded] = {}
        for candidate in chunk:
            footer = footers[candidate.key]
            etag, rows = loaded.get(candidate.key, (footer.etag, 0))
            if rows != footer.rows:
                result.hand_back(candidate.key, "rows rejected")
            elif etag != footer.etag:
                result.hand_back(candidate.key, "etag changed")
            else:
                decided[candidate.key] = Loaded(etag, rows, attempt_id)
        result.loaded.update(decided)
        if on_chunk is not None:
            on_chunk(decided)
    return result


def _insert_chunk(
    warehouse: Warehouse,
    access: S3Access,
    bucket: str,
    day: date,
    chunk: list[Candidate],
    load_id: str,
) -> dict[str, tuple[str, int]] | None:
    """Insert a chunk's passing rows; per key, the (etag, rows) loaded. None: query failed."""
    paths = [f"{bucket}/{c.key}" for c in chunk]
    params = {
        **access.parameters(access.url(bucket, [c.key for c in chunk])),
        "structure": STRUCTURE,
        "day": day,
        "key_offset": len(bucket) + 2,
        "load_id": load_id,
        "paths": paths,
        "positions": list(range(1, len(chunk) + 1)),
        "nodes": [c.rollup.node_id for c in chunk],
        "hour_starts": [c.rollup.hour_start for c in chunk],
        "hour_ends": [c.rollup.hour_end for c in chunk],
        "accounts": [c.only_account or "" for c in chunk],
    }
    source = access.function("Parquet", structure=True)
    try:
        warehouse.command(insert_sql(warehouse.table("rollup_rows"), source), params)
    except WarehouseError as exc:
        _raise_if_unreachable(exc)
        return None
    rows = warehouse.query_rows(
        f"""
        SELECT source_key, source_etag, count() FROM {warehouse.table("rollup_rows")}
        WHERE day = {{day:Date}} AND run_id = {{load_id:String}}
          AND source_key IN {{keys:Array(String)}}
        GROUP BY source_key, source_etag
        """,
        {"day": day, "load_id": load_id, "keys": [c.key for c in chunk]},
    )
    loaded: dict[str, tuple[str, int]] = {}
    for key, etag, count in rows:
        if key in loaded:  # two versions read within one query: let Python decide
            loaded[key] = ("", -1)
        else:
            loaded[key] = (etag, count)
    return loaded
