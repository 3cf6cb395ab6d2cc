"""Cache events (contract §2): the application's view of project-bound uploads and downloads.

Derived from the TRUE cells (before under-reporting, silence or broken files, since the
application saw the traffic regardless): each egress/download or ingress/upload cell with a
project becomes 1–3 events whose sizes sum exactly to the cell's bytes, at times inside the
cell's window. Then the analytics queue drops a share of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from usage_etl.simulator import ids
from usage_etl.simulator.fleet import DOWNLOAD, EXISTS, KINDS, MICROS, Cells

if TYPE_CHECKING:
    from usage_etl.simulator.fleet import Fleet

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("occurred_at", pa.timestamp("ms", tz="UTC")),
        ("account_id", pa.string()),
        ("project_id", pa.string()),
        ("artifact_kind", pa.string()),
        ("action", pa.string()),
        ("size_bytes", pa.uint64()),
    ]
)
SPLIT_AT = (4 * 2**20, 64 * 2**20)  # bigger cells are seen as more events
_ACTIONS = pa.array(["download", "upload"])
_KINDS = pa.array(KINDS)


def empty() -> pa.Table:
    return SCHEMA.empty_table()


def cache_events(cells: Cells, fleet: Fleet, rng: np.random.Generator, drop: float) -> pa.Table:
    c = cells.codes
    idx = np.flatnonzero((c["proj"] > 0) & (c["op"] != EXISTS))
    if len(idx) == 0:
        return empty()
    cell_bytes = cells.frame["bytes"].to_numpy()[idx]
    per_cell = 1 + sum((cell_bytes > t).astype(np.int64) for t in SPLIT_AT)
    rep = np.repeat(np.arange(len(idx)), per_cell)
    starts = np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    j = np.arange(len(rep)) - starts  # event number inside its cell
    sizes = _split_exactly(cell_bytes, per_cell, rep, starts, rng)
    rows = idx[rep]
    span_us = fleet_window_us(cells)
    occurred_ms = (c["window_us"][rows] + (rng.random(len(rep)) * span_us).astype(np.int64)) // 1000
    h = cells.hashes[rows]
    event_ids = ids.hex_ids(ids.combine([h[:, 0], h[:, 1], j.astype(np.uint64)], len(rep)))
    acct = c["acct"][rows]
    table = pa.table(
        {
            "event_id": event_ids,
            "occurred_at": pa.array(occurred_ms, pa.timestamp("ms", tz="UTC")),
            "account_id": fleet.account_array.take(acct),
            "project_id": fleet.project_array.take(acct * fleet.slots + c["proj"][rows]),
            "artifact_kind": _KINDS.take(c["kind"][rows]),
            "action": _ACTIONS.take(np.where(c["op"][rows] == DOWNLOAD, 0, 1)),
            "size_bytes": pa.array(sizes.astype(np.uint64)),
        },
        schema=SCHEMA,
    )
    keep = rng.random(len(rep)) >= drop
    return table if keep.all() else table.filter(pa.array(keep))


def fleet_window_us(cells: Cells) -> int:
    return int(cells.frame["window_seconds"][0]) * MICROS if cells.frame.height else 0


def _split_exactly(cell_bytes, per_cell, rep, starts, rng) -> np.ndarray:
    """Split each cell's bytes into its events with random shares summing exactly."""
    weights = rng.integers(1, 100, len(rep))
    cum = np.cumsum(weights)
    group_end = np.cumsum(per_cell) - 1
    within = cum - np.repeat(np.r_[0, cum[group_end][:-1]], per_cell)  # running weight in cell
    total = np.repeat(within[group_end], per_cell)
    upto = cell_bytes[rep] * within // total  # exact integer arithmetic
    before = np.r_[0, upto[:-1]]
    before[np.arange(len(rep)) == starts] = 0
    return upto - before
