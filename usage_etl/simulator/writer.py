"""File bodies as nodes write them, the ways nodes break them, and the upload to S3.

Parquet: zstd, contract columns, `bytes`/`request_count` as int64 so broken rows can be
negative, timestamps in microseconds (UTC, or naive for some firmware). NDJSON: gzip of one
JSON object per line, timestamps as RFC 3339 strings with `Z`.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from usage_etl.rollups.formats import UnknownFormat, rollup_format
from usage_etl.rollups.schema import FIELDS, RowRule, object_key, prefix_head

if TYPE_CHECKING:
    from usage_etl.simulator.model import SimFile

RFC3339 = "%Y-%m-%dT%H:%M:%S%.6fZ"
TIMESTAMP_FIELDS = ("window_start", "emitted_at")
# Columns a "missing column" fault drops, in turn.
DROPPABLE_COLUMNS = ("region", "bytes", "emitted_at", "event_id", "window_start")


def written_columns(omit_network_path: bool, drop: str | None = None) -> list[str]:
    skip = {drop} | ({"network_path"} if omit_network_path else set())
    return [f for f in FIELDS if f not in skip]


def parquet_body(rows: pl.DataFrame, columns: list[str], naive_timestamps: bool) -> bytes:
    frame = rows.select(columns)
    if naive_timestamps:
        frame = frame.with_columns(
            pl.col(c).dt.replace_time_zone(None) for c in TIMESTAMP_FIELDS if c in columns
        )
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    return buffer.getvalue()


def ndjson_gz_body(rows: pl.DataFrame, columns: list[str]) -> bytes:
    frame = rows.select(columns).with_columns(
        pl.col(c).dt.strftime(RFC3339) for c in TIMESTAMP_FIELDS if c in columns
    )
    garbage = _invalid_json_lines(rows)
    if len(garbage) == 0:
        buffer = io.BytesIO()
        frame.write_ndjson(buffer, compression="gzip", compression_level=1)
        return buffer.getvalue()
    lines = frame.write_ndjson().encode().split(b"\n")
    for i in garbage:  # a line cut mid-object, as a crashing writer leaves it
        lines[i] = lines[i][: len(lines[i]) // 2]
    return gzip.compress(b"\n".join(lines), compresslevel=1, mtime=0)  # same seed, same bytes


def _invalid_json_lines(rows: pl.DataFrame) -> np.ndarray:
    if "rule" not in rows.columns:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero((rows["rule"] == RowRule.INVALID_JSON.value).fill_null(False).to_numpy())


def body(rows: pl.DataFrame, fmt: str, columns: list[str], naive_timestamps: bool) -> bytes:
    """A file of a registered format (`fmt` is its name, rollups/formats.py); a name the
    registry does not know, or a format the simulator cannot write, raises."""
    name = rollup_format(fmt).name
    if name == "parquet":
        return parquet_body(rows, columns, naive_timestamps)
    if name == "ndjson.gz":
        return ndjson_gz_body(rows, columns)
    raise UnknownFormat(f"the simulator writes no {name} files (simulator/writer.py)")


def truncate(data: bytes, fraction: float) -> bytes:
    """Cut a body short, as an interrupted upload does (never to zero bytes)."""
    return data[: max(1, min(len(data) - 1, int(len(data) * fraction)))]


def full_key(prefix: str, relative_key: str) -> str:
    return f"{prefix_head(prefix)}{relative_key}"


def upload(
    files: Iterable[SimFile],
    s3_client,
    bucket: str,
    prefix: str,
    include_late: bool = False,
    workers: int = 1,
) -> int:
    """PUT the files in list order (order matters: corrections may land first). Late files
    are skipped unless include_late. Returns the number of objects written.

    `workers` > 1 PUTs on that many threads (boto3 clients are thread-safe): the same bytes
    under the same keys, but the order is kept only among the PUTs of one key (a key's
    later body still lands last); across keys the objects land in any order, so their
    LastModified order may differ from the list's. For bulk loading (the benchmarks), where
    nothing reads the landing until every object is there."""
    chosen = [f for f in files if include_late or not f.is_late]

    def put(group: list[SimFile]) -> None:
        for f in group:
            s3_client.put_object(Bucket=bucket, Key=full_key(prefix, f.key), Body=f.body)

    if workers <= 1:
        put(chosen)
        return len(chosen)
    by_key: dict[str, list[SimFile]] = {}
    for f in chosen:
        by_key.setdefault(f.key, []).append(f)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(put, group) for group in by_key.values()]:
            future.result()
    return len(chosen)


def relative_key(sim_file_day, hour: int, node_id: str, name: str) -> str:
    return object_key("", sim_file_day, hour, node_id, name)
