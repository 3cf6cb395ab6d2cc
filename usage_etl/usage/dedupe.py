"""The dedupe rule (contract §1): which version of an event_id counts.

Per event_id, the version with the greatest emitted_at wins; between versions with the same
emitted_at, the one with the greatest *content hash*. The choice depends on the versions only,
never on files or processing order. This module is the rule's one home, in both languages:
`VERSION_ORDER` / `CONTENT_HASH` in ClickHouse (the audits, the invoice explanation; the
publish's `latest_versions_sql` uses `VERSION_KEY`, the same order packed into one UInt256 for
speed, proved equal by tests/test_version_key.py) and `version_order` / `content_hash` in
Python (the simulator's ground truth); a test checks that both hashes give the same 16 bytes.

The content hash is the MD5 of a canonical encoding of the values in
`rollups/schema.py:CONTENT_FIELDS` (the values that make two versions "the same rollup"): each
text field length-prefixed, then the time and integer fields in decimal (times in
microseconds), comma-separated. Both compare the digests as unsigned byte strings. Adding a
field to CONTENT_FIELDS changes both encodings together.

The hash is only computed for event_ids that have several versions (a few percent of a day).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from usage_etl.rollups.schema import (
    CONTENT_FIELDS,
    DEFAULT_NETWORK_PATH,
    STRING_FIELDS,
    TIME_FIELDS,
    USAGE_DIMENSIONS,
)
from usage_etl.usage.ledger import counting_rows_sql
from usage_etl.warehouse.client import Warehouse

TEXT_FIELDS = tuple(f for f in CONTENT_FIELDS if f in STRING_FIELDS)
NUMBER_FIELDS = tuple(f for f in CONTENT_FIELDS if f not in STRING_FIELDS)  # times, integers

_TEXT_SQL = ", ".join(f"toString(length({f})), ':', {f}" for f in TEXT_FIELDS)
_NUMBERS_SQL = ", ',', ".join(
    f"toString(toUnixTimestamp64Micro({f}))" if f in TIME_FIELDS else f"toString({f})"
    for f in NUMBER_FIELDS
)
# Over rollup_rows' columns (project_id '' for none, network_path filled in): FixedString(16).
CONTENT_HASH = f"MD5(concat({_TEXT_SQL}, {_NUMBERS_SQL}))"
# The order in which versions of one event_id win: the greatest wins.
VERSION_ORDER = f"(emitted_at, {CONTENT_HASH})"
# The same order as an ORDER BY clause, the winner first (the audit's independent recount).
LATEST_VERSION_FIRST = f"emitted_at DESC, {CONTENT_HASH} DESC"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _number(row: Mapping, name: str) -> int:
    if name not in TIME_FIELDS:
        return int(row[name])
    value = row[name]
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def content_hash(row: Mapping) -> bytes:
    """CONTENT_HASH of one row as a node wrote it (project_id None = '', network_path None =
    the default), in Python."""
    parts = []
    for name in TEXT_FIELDS:
        value = row.get(name)
        if value is None:
            value = DEFAULT_NETWORK_PATH if name == "network_path" else ""
        encoded = value.encode()
        parts.append(f"{len(encoded)}:".encode() + encoded)
    parts.append(",".join(str(_number(row, name)) for name in NUMBER_FIELDS).encode())
    return hashlib.md5(b"".join(parts), usedforsecurity=False).digest()


def version_order(row: Mapping) -> tuple[datetime, bytes]:
    """VERSION_ORDER of one row, in Python: the version with the greatest wins."""
    return row["emitted_at"], content_hash(row)


DIMENSIONS = ", ".join(USAGE_DIMENSIONS)


# The version order (emitted_at, content_hash) as one UInt256: emitted_at's microseconds with
# the sign bit flipped (Int64 order as unsigned) above the content hash read big-endian (MD5
# bytes compare as unsigned byte strings). `VERSION_KEY_LATEST_FIRST` puts the latest emitted_at
# lowest and keeps the hash ascending: its argMin is the smallest hash among the latest versions.
_EMITTED = "bitXor(reinterpretAsUInt64(toUnixTimestamp64Micro(emitted_at)), 9223372036854775808)"
_HASH = "toUInt256(reinterpretAsUInt128(reverse(content_hash)))"
VERSION_KEY = f"bitOr(bitShiftLeft(toUInt256({_EMITTED}), 128), {_HASH})"
VERSION_KEY_LATEST_FIRST = f"bitOr(bitShiftLeft(toUInt256(bitNot({_EMITTED})), 128), {_HASH})"


def latest_versions_sql(
    warehouse: Warehouse, duplicates: str, values: Sequence[str], computed: str = ""
) -> str:
    """One row per event_id whose hash is in the table `duplicates`: the winning version's
    `values` (the greatest (emitted_at, content_hash)), each as `w_<value>`, how many versions
    it was chosen from, and whether the versions sharing the greatest emitted_at differ in
    content (a conflict). `values` name columns of the staged rows or of `computed` (a SELECT
    list over them, e.g. the publish's packed hourly key).

    The order is one UInt256 (`VERSION_KEY`) and each value its own argMax: argMax over a tuple
    value or a tuple key keeps every state as a generic Field, ~3x the CPU of the whole
    statement at 10% duplicated rows (docs/performance.md, shape grid). Versions with equal
    keys are identical (same content hash), so which one a column's argMax takes is the same.
    The low 128 bits of both keys are the content hash: the greatest and the smallest hash
    among the latest versions differ exactly when they conflict."""
    winner = ", ".join(f"argMax({name}, version_key) AS w_{name}" for name in values)
    return f"""
        SELECT
            event_id,
            {winner},
            count() AS versions,
            toUInt128(max(version_key)) != toUInt128(min(latest_first)) AS conflict
        FROM (
            SELECT *, {VERSION_KEY} AS version_key, {VERSION_KEY_LATEST_FIRST} AS latest_first
            FROM (
                SELECT *, {CONTENT_HASH} AS content_hash {", " + computed if computed else ""}
                FROM ({counting_rows_sql(warehouse)})
                WHERE event_hash IN (SELECT event_hash FROM {warehouse.table(duplicates)})
            )
        )
        GROUP BY event_id
    """
