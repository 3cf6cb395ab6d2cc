"""Shapes of a day for the benchmark grid: the simulator's day, rewritten file by file.

The simulator (usage_etl/simulator) sets accounts, projects per account, the private-network
share, the number of nodes and whole-file re-deliveries. The rest is applied here to each
node-hour's files before upload, without changing what the day bills (the simulator's truth
stays exact):

* event_id length: every id is replaced by a 61-bit hash of it in base 36 (12 chars), followed
  for longer ids by the original id and padding; the same id always maps to the same new id,
  so re-deliveries and corrections still meet.
* scattered duplicates: a share of the node-hour's rows is delivered a second time, identical,
  in an extra file of the same node-hour (rows, not whole files, repeat).
* files per node-hour: each file's rows split into several files.
* Parquet row-group size.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import polars as pl

from usage_etl.simulator import writer
from usage_etl.simulator.model import SimFile

_ALPHABET = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


@dataclass(frozen=True)
class Shape:
    name: str = "base"
    fmt: str = "parquet"
    rows: int = 1_000_000
    nodes: int = 10
    accounts: int = 2000
    max_projects: int = 4  # 0: every row project-less
    private_share: float = 0.1
    redelivery: float = 0.02  # whole files re-delivered under a new name
    scattered_dups: float = 0.0  # rows repeated in another file of the node-hour
    event_id_len: int = 0  # 0: the simulator's own ids (32 hex chars)
    files_per_hour: int = 1
    row_group: int = 0  # 0: the writer's default

    @property
    def rewrites(self) -> bool:
        return bool(
            self.scattered_dups or self.event_id_len or self.files_per_hour > 1 or self.row_group
        )

    def describe(self) -> str:
        base = Shape(fmt=self.fmt, rows=self.rows)
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.name not in ("name",) and getattr(self, f.name) != getattr(base, f.name)
        ]
        return ", ".join(changed) or "base"


def _base36(hashes: np.ndarray, width: int = 12) -> list[str]:
    h = hashes & np.uint64((1 << 61) - 1)
    digits = np.empty((len(h), width), dtype=np.uint8)
    for i in range(width - 1, -1, -1):
        digits[:, i] = _ALPHABET[(h % np.uint64(36)).astype(np.int64)]
        h = h // np.uint64(36)
    return digits.view(f"S{width}").ravel().astype(str).tolist()


def reshape_ids(rows: pl.DataFrame, length: int) -> pl.DataFrame:
    ids = rows["event_id"]
    short = _base36(ids.hash(seed=1).to_numpy())
    new = pl.Series("event_id", short)
    if length > 12:
        new = (new + "-" + ids).str.pad_end(length, "~").str.slice(0, length)
    return rows.with_columns(new)


def _body(rows: pl.DataFrame, f: SimFile, shape: Shape) -> bytes:
    columns = list(f.columns)
    if f.format == "parquet" and shape.row_group:
        buffer = io.BytesIO()
        rows.select(columns).write_parquet(
            buffer, compression="zstd", statistics=False, row_group_size=shape.row_group
        )
        return buffer.getvalue()
    naive = f.format == "parquet" and rows.schema.get("window_start") == pl.Datetime("us")
    return writer.body(rows, f.format, columns, naive)


def _renamed(f: SimFile, suffix: str) -> str:
    head, name = f.key.rsplit("/", 1)
    stem, ext = name.split(".", 1)
    return f"{head}/{stem}-{suffix}.{ext}"


def reshape_unit(files: list[SimFile], shape: Shape) -> list[SimFile]:
    """One node-hour's files rewritten to `shape` (same billed usage)."""
    if not shape.rewrites:
        return files
    out: list[SimFile] = []
    data = [f for f in files if f.rows is not None and f.format in ("parquet", "ndjson.gz")]
    frames = {}
    for f in data:
        rows = f.rows
        if shape.event_id_len:
            rows = reshape_ids(rows, shape.event_id_len)
        frames[f.key] = rows
    for f in files:
        if f.key not in frames:
            out.append(f)
            continue
        rows = frames[f.key]
        parts = max(1, shape.files_per_hour)
        size = -(-rows.height // parts) if rows.height else 0
        for i in range(parts):
            chunk = rows.slice(i * size, size) if size else rows
            if i and chunk.height == 0:
                continue
            key = f.key if parts == 1 else _renamed(f, f"part{i}")
            out.append(dataclasses.replace(f, key=key, body=_body(chunk, f, shape), rows=chunk))
    if shape.scattered_dups and data:
        every = pl.concat([frames[f.key] for f in data], how="vertical_relaxed")
        picked = every.sample(fraction=shape.scattered_dups, seed=len(every) + 17)
        if picked.height:
            template = data[-1]
            key = _renamed(template, "dups")
            out.append(
                dataclasses.replace(
                    template, key=key, body=_body(picked, template, shape), rows=picked
                )
            )
    return out


def grid(rows: int) -> list[Shape]:
    """One factor at a time around the base shape (10 nodes x 24 files, 2,000 accounts, 2% of
    files re-delivered, Parquet), plus the issue's shape: many accounts, short ids, whole files
    re-delivered."""
    return [
        Shape("base", rows=rows),
        Shape("accounts 50", rows=rows, accounts=50),
        Shape("accounts 5,000", rows=rows, accounts=5000),
        Shape("accounts 50,000", rows=rows, accounts=50_000),
        Shape("no projects", rows=rows, max_projects=0),
        Shape("20 projects/account", rows=rows, max_projects=20),
        Shape("private 50%", rows=rows, private_share=0.5),
        Shape("event_id 12", rows=rows, event_id_len=12),
        Shape("event_id 128", rows=rows, event_id_len=128),
        Shape("no duplicates", rows=rows, redelivery=0.0),
        Shape("10% files re-delivered", rows=rows, redelivery=0.10),
        Shape("2% rows scattered", rows=rows, redelivery=0.0, scattered_dups=0.02),
        Shape("10% rows scattered", rows=rows, redelivery=0.0, scattered_dups=0.10),
        Shape("200 nodes", rows=rows, nodes=200),
        Shape("10 nodes x 4 files/h", rows=rows, files_per_hour=4),
        Shape("200 nodes x 3 files/h", rows=rows, nodes=200, files_per_hour=3),
        Shape("row groups 10k", rows=rows, row_group=10_000),
        Shape("ndjson", fmt="ndjson", rows=rows),
        Shape(
            "issue: 5k acc, id 12, 10% files",
            rows=rows,
            accounts=5000,
            event_id_len=12,
            redelivery=0.10,
        ),
    ]
