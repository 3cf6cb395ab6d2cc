"""The dedupe rule (contract §1): which version of an event_id counts.

Per event_id, the version with the greatest emitted_at wins; between versions with the same
emitted_at, the one with the greatest *content hash*. The choice depends on the versions only,
never on files or processing order. This module is the rule's one home, in both languages:
`VERSION_ORDER` / `CONTENT_HASH` in ClickHouse (the publish's `latest_versions_sql`, the audits,
the invoice explanation) and `version_order` / `content_hash` in Python (the simulator's ground
truth); a test checks that both hashes give the same 16 bytes.

The content hash is the MD5 of a canonical encoding of the values in
`rollups/schema.py:CONTENT_FIELDS` (the values that make two versions "the same rollup"): each
text field length-prefixed, then the time and integer fields in decimal (times in
microseconds), comma-separated. Both compare the digests as unsigned byte strings. Adding a
field to CONTENT_FIELDS changes both encodings together.

The hash is only computed for event_ids that have several versions (a few percent of a day).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
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


def latest_versions_sql(warehouse: Warehouse, duplicates: str) -> str:
    """One row per event_id whose hash is in the table `duplicates`: the winning version (the
    greatest VERSION_ORDER), how many versions it was chosen from, and whether the versions
    sharing the greatest emitted_at differ in content (a conflict)."""
    return f"""
        SELECT
            event_id,
            argMax(({DIMENSIONS}, window_start, bytes, request_count),
                   (emitted_at, content_hash)) AS v,
            count() AS versions,
            argMax(content_hash, (emitted_at, content_hash))
                != argMin(content_hash, (-toUnixTimestamp64Micro(emitted_at), content_hash))
                AS conflict
        FROM (
            SELECT *, {CONTENT_HASH} AS content_hash FROM ({counting_rows_sql(warehouse)})
            WHERE event_hash IN (SELECT event_hash FROM {warehouse.table(duplicates)})
        )
        GROUP BY event_id
    """
