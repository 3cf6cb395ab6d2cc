"""The tie rule between versions of one event_id with the same emitted_at (contract §1).

The winner is the version with the greatest *content hash*: the MD5 of a canonical encoding
of its values (each text field length-prefixed, then the window start in microseconds, the
window length, bytes and request_count in decimal). The choice depends on the versions only,
never on files or processing order, and it is computed the same way in ClickHouse
(`CONTENT_HASH`, for the publish and the audits) and in Python (`content_hash`, for the
simulator's ground truth): a test checks that both give the same 16 bytes. Both compare the
digests as unsigned byte strings.

The hash is only computed for event_ids that have several versions (a few percent of a day).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from usage_etl.rollups.schema import DEFAULT_NETWORK_PATH

TEXT_FIELDS = (
    "node_id", "region", "account_id", "project_id", "direction", "operation", "artifact_kind",
    "network_path",
)  # fmt: skip
NUMBER_FIELDS = ("window_seconds", "bytes", "request_count")

_TEXT_SQL = ", ".join(f"toString(length({f})), ':', {f}" for f in TEXT_FIELDS)
_NUMBERS_SQL = ", ',', ".join(
    ["toString(toUnixTimestamp64Micro(window_start))", *(f"toString({f})" for f in NUMBER_FIELDS)]
)
# Over rollup_rows' columns (project_id '' for none, network_path filled in): FixedString(16).
CONTENT_HASH = f"MD5(concat({_TEXT_SQL}, {_NUMBERS_SQL}))"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    start = row["window_start"]
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    micros = (start - _EPOCH) // timedelta(microseconds=1)
    numbers = [micros, *(int(row[name]) for name in NUMBER_FIELDS)]
    parts.append(",".join(str(n) for n in numbers).encode())
    return hashlib.md5(b"".join(parts), usedforsecurity=False).digest()
