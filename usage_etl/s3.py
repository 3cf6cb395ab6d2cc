"""The boto3 S3 client every part of the project uses (no Dagster import: the CLI stays fast).

Every request is bounded: a connect timeout, a read timeout (the longest a single socket read may
block, so a large object still streams as long as bytes keep coming) and a few attempts with
backoff for transient faults (timeouts, 5xx, throttling, connection resets). A stalled endpoint
therefore fails a call after at most about attempts x (connect + read timeout) plus the backoff
(docs/operations.md, "Timeouts and failures").
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.utils import parse_timestamp as botocore_parse_timestamp

if TYPE_CHECKING:
    from usage_etl.settings import Settings


def s3_config(max_attempts: int | None = None, settings: Settings | None = None) -> Config:
    """The botocore configuration of every client: `max_attempts` counts the first request."""
    if settings is None:
        from usage_etl.settings import Settings

        settings = Settings()
    return Config(
        retries={
            "total_max_attempts": max_attempts or settings.s3_max_attempts,
            "mode": "standard",
        },
        connect_timeout=settings.s3_connect_timeout_seconds,
        read_timeout=settings.s3_read_timeout_seconds,
        s3={"addressing_style": "path"},
    )


def parse_timestamp(value: Any) -> datetime:
    """The clients' timestamp parser: an ISO 8601 time with its zone (every LastModified of a
    listing, `2026-10-01T02:00:00.000Z`) by `datetime.fromisoformat`, anything else (an HTTP
    date header, epoch seconds) by botocore's own parser. Botocore's default runs dateutil's
    general parser on every listed object: ~0.2 ms each, ~0.5 CPU-s for a 10-day range's
    ~3,000 objects (docs/performance.md, "Session 11"). Same instant; the zone is
    `datetime.UTC` instead of dateutil's `tzutc()`."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return botocore_parse_timestamp(value)


def s3_client(max_attempts: int | None = None, settings: Settings | None = None):
    """A boto3 S3 client with bounded timeouts and bounded, backed-off retries."""
    config = s3_config(max_attempts, settings)
    # A fresh session per client: boto3's default session caches the first credentials it
    # resolves, so a long-lived process (code server, daemon) would miss rotated AWS_* keys.
    session = botocore.session.Session()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    return boto3.session.Session(botocore_session=session).client("s3", config=config)
