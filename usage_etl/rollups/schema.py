"""Contract §1 as code: object keys, fields, allowed values and quarantine rule names.

The validator, the simulator and the docs all use these names, so a rule reported in the
quarantine table is the same word the simulator used when it injected the fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from usage_etl.rollups.formats import format_of_name, is_rollup_name

SCHEMA_VERSION = 1
MAX_EVENT_ID_LENGTH = 256
MAX_COUNTER = 2**63  # bytes and request_count must be < 2^63
DIRECTIONS = ("ingress", "egress")
NETWORK_PATHS = ("public_internet", "private_network", "unknown")
DEFAULT_NETWORK_PATH = "unknown"

FIELDS = (
    "schema_version",
    "event_id",
    "node_id",
    "region",
    "account_id",
    "project_id",
    "direction",
    "operation",
    "artifact_kind",
    "network_path",
    "window_start",
    "window_seconds",
    "bytes",
    "request_count",
    "emitted_at",
)
REQUIRED_FIELDS = tuple(f for f in FIELDS if f not in ("project_id", "network_path"))
# Field groups by value type (the readers parse them, the native path casts them).
INT_FIELDS = ("schema_version", "window_seconds", "bytes", "request_count")
TIME_FIELDS = ("window_start", "emitted_at")
STRING_FIELDS = tuple(f for f in FIELDS if f not in INT_FIELDS + TIME_FIELDS)
# The values that make two versions of one event_id "the same rollup" (identical re-delivery).
CONTENT_FIELDS = (
    "node_id",
    "region",
    "account_id",
    "project_id",
    "direction",
    "operation",
    "artifact_kind",
    "network_path",
    "window_start",
    "window_seconds",
    "bytes",
    "request_count",
)
USAGE_DIMENSIONS = (
    "account_id",
    "project_id",
    "region",
    "node_id",
    "direction",
    "operation",
    "artifact_kind",
    "network_path",
)


class RowRule(StrEnum):
    """Why a row was quarantined. A row is reported under the first rule it breaks, in this
    order."""

    INVALID_JSON = "invalid_json"  # an NDJSON line that is not a JSON object
    SCHEMA_VERSION = "schema_version"  # missing or not 1
    EVENT_ID = "event_id"  # missing, not a string, empty or longer than 256 chars
    NODE_ID_MISMATCH = "node_id_mismatch"  # missing or not the key's node=NODE_ID
    REGION = "region"  # missing or empty
    ACCOUNT_ID = "account_id"  # missing or empty
    PROJECT_ID = "project_id"  # present but not a string
    DIRECTION = "direction"  # not ingress/egress
    OPERATION = "operation"  # missing or empty
    ARTIFACT_KIND = "artifact_kind"  # missing or empty
    NETWORK_PATH = "network_path"  # not public_internet/private_network/unknown
    WINDOW_START = "window_start"  # missing or not a timestamp
    WINDOW_OUTSIDE_HOUR = "window_outside_hour"  # not inside the key's date/hour
    WINDOW_SECONDS = "window_seconds"  # not an int > 0 that divides 3600
    BYTES = "bytes"  # not an int in [0, 2^63)
    REQUEST_COUNT = "request_count"  # not an int in [0, 2^63)
    EMITTED_AT = "emitted_at"  # missing or not a timestamp
    TENANT_MISMATCH = "tenant_mismatch"  # self-hosted node reporting another account
    UNREGISTERED_NODE = "unregistered_node"  # node missing from the registry (when strict)


class FileRule(StrEnum):
    """Why a whole file was quarantined."""

    UNREADABLE = "unreadable_file"  # corrupt, truncated, not Parquet / not gzip
    MISSING_COLUMNS = "missing_columns"  # a required column is absent
    COLUMN_TYPE = "column_type"  # a column has a type that cannot hold the field


class IgnoreReason(StrEnum):
    """Why an object under the landing prefix is not a rollup file (reported, never fatal)."""

    UNSUPPORTED_SUFFIX = "unsupported_suffix"
    TEMPORARY = "temporary_object"  # under a _tmp/ folder, or a .tmp name
    EMPTY = "empty_object"  # zero-byte marker such as _SUCCESS
    BAD_KEY = "bad_key"  # not PREFIX/date=YYYY-MM-DD/hour=HH/node=NODE_ID/NAME


KEY_PATTERN = re.compile(
    r"^date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/node=(?P<node>[^/]+)/(?P<name>[^/]+)$"
)


@dataclass(frozen=True)
class RollupKey:
    """A parsed rollup object key (relative to the landing prefix)."""

    day: date
    hour: int
    node_id: str
    name: str

    @property
    def hour_start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, self.hour, tzinfo=UTC)

    @property
    def hour_end(self) -> datetime:
        return self.hour_start + timedelta(hours=1)

    @property
    def format(self) -> str:
        """The registered format's name (rollups/formats.py); an unknown suffix raises."""
        return format_of_name(self.name).name


def object_key(prefix: str, day: date, hour: int, node_id: str, name: str) -> str:
    """The key a node writes: PREFIX/date=YYYY-MM-DD/hour=HH/node=NODE_ID/NAME."""
    return f"{day_prefix(prefix, day)}hour={hour:02d}/node={node_id}/{name}"


def prefix_head(prefix: str) -> str:
    """The landing prefix as keys under it begin: `a/b/` for `/a/b/`, "" for the bucket root."""
    return f"{prefix.strip('/')}/" if prefix.strip("/") else ""


def day_prefix(prefix: str, day: date) -> str:
    return f"{prefix_head(prefix)}date={day.isoformat()}/"


def classify_key(prefix: str, key: str, size: int) -> RollupKey | IgnoreReason:
    """Parse a listed key, or say why it is not a rollup file."""
    head = prefix_head(prefix)
    relative = key[len(head) :] if key.startswith(head) else key
    parts = relative.split("/")
    if any(p == "_tmp" or p.startswith("_tmp") for p in parts[:-1]) or parts[-1].endswith(".tmp"):
        return IgnoreReason.TEMPORARY
    if not is_rollup_name(parts[-1]):
        return IgnoreReason.EMPTY if size == 0 else IgnoreReason.UNSUPPORTED_SUFFIX
    match = KEY_PATTERN.match(relative)
    if not match:
        return IgnoreReason.BAD_KEY
    try:
        day = date.fromisoformat(match["date"])
    except ValueError:
        return IgnoreReason.BAD_KEY
    hour = int(match["hour"])
    if hour > 23:
        return IgnoreReason.BAD_KEY
    return RollupKey(day, hour, match["node"], match["name"])
