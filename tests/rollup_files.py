"""Hand-built rollup rows and files for precise ingestion tests (the simulator covers volume)."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from usage_etl.landing import Landing as LandingArea
from usage_etl.rollups.schema import object_key
from usage_etl.simulator.truth import ROW_SCHEMA


def rollup(
    event_id: str,
    *,
    day: date = date(2026, 10, 5),
    hour: int = 3,
    node_id: str = "node-a",
    account_id: str = "acct-1",
    project_id: str | None = "proj-1",
    direction: str = "egress",
    operation: str = "download",
    artifact_kind: str = "xcode",
    network_path: str = "public_internet",
    minute: int = 0,
    window_seconds: int = 3600,
    bytes: int = 1000,
    request_count: int = 10,
    emitted_minute: int = 5,
    **overrides,
) -> dict:
    start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC) + timedelta(minutes=minute)
    row = {
        "schema_version": 1,
        "event_id": event_id,
        "node_id": node_id,
        "region": "eu-west-1",
        "account_id": account_id,
        "project_id": project_id,
        "direction": direction,
        "operation": operation,
        "artifact_kind": artifact_kind,
        "network_path": network_path,
        "window_start": start,
        "window_seconds": window_seconds,
        "bytes": bytes,
        "request_count": request_count,
        "emitted_at": start + timedelta(hours=1, minutes=emitted_minute),
    }
    row.update(overrides)
    return row


# The contract fields typed as a node writes them (bytes as int64 so negatives can be written).
PARQUET_SCHEMA = ROW_SCHEMA


def parquet_bytes(rows: list[dict], drop: tuple[str, ...] = ()) -> bytes:
    frame = pl.DataFrame(rows, schema=PARQUET_SCHEMA).drop(list(drop))
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


def _json_value(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def json_line(row: dict) -> bytes:
    """One NDJSON line as `json.dumps` writes it (timestamps as RFC 3339 with `Z`)."""
    return json.dumps({k: _json_value(v) for k, v in row.items()}).encode()


def ndjson_gz_bytes(rows: list[dict], raw_lines: tuple[bytes, ...] = ()) -> bytes:
    lines = [json_line(r) for r in rows]
    return gzip.compress(b"\n".join([*lines, *raw_lines]) + b"\n")


class Landing:
    """Writes objects under the test's landing prefix (from the environment)."""

    def __init__(self, s3_server, settings):
        self.client = s3_server.client()
        self.bucket = settings.landing_bucket
        self.prefix = settings.landing_prefix

    @property
    def area(self) -> LandingArea:
        """The same landing area as the pipeline's value."""
        return LandingArea(self.client, self.bucket, self.prefix)

    def key(self, name: str, day: date = date(2026, 10, 5), hour: int = 3, node: str = "node-a"):
        return object_key(self.prefix, day, hour, node, name)

    def put(self, name: str, body: bytes, **where) -> str:
        key = self.key(name, **where)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key

    def put_raw(self, relative_key: str, body: bytes) -> str:
        key = f"{self.prefix}/{relative_key}"
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key


def run_daily(day: str, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    from usage_etl.definitions import defs

    job = defs().resolve_job_def("daily_usage")
    return job.execute_in_process(
        partition_key=day, instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )  # fmt: skip


def usage_rows(warehouse, day: str = "2026-10-05") -> list[tuple]:
    return warehouse.query_rows(
        f"SELECT account_id, project_id, node_id, direction, operation, artifact_kind, "
        f"network_path, sum(bytes), sum(request_count) FROM {warehouse.table('usage_daily')} "
        "WHERE day = {day:Date} GROUP BY ALL ORDER BY ALL",
        {"day": day},
    )
