"""Stable, vectorized ids: the simulator's stand-in for a node's event-id hash.

A real node hashes (node, window start, tenant, dimensions) into the rollup's event_id. Doing
that with hashlib row by row would dominate generation time, so strings are hashed once each
(blake2b) and combined per row with splitmix64 in numpy. The result only depends on the values,
never on numpy/polars versions, so ids are reproducible across machines and releases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
# Two different starting states give the two independent halves of a 128-bit id.
_SEEDS = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))


def string_hash(value: str | None) -> np.uint64:
    """64-bit stable hash of one string (None hashes differently from "")."""
    data = b"\x00null" if value is None else value.encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))


def string_hashes(values: Iterable[str | None]) -> np.ndarray:
    return np.array([string_hash(v) for v in values], dtype=np.uint64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def combine(components: list[np.ndarray | np.uint64], n: int) -> np.ndarray:
    """Order-sensitive 128-bit hash of per-row components -> array of shape (n, 2)."""
    out = np.empty((n, 2), dtype=np.uint64)
    for half, seed in enumerate(_SEEDS):
        state = np.full(n, seed, dtype=np.uint64)
        for component in components:
            state = splitmix64(state ^ np.asarray(component, dtype=np.uint64))
        out[:, half] = state
    return out


def hex_ids(hashes: np.ndarray) -> pa.StringArray:
    """(n, 2) uint64 -> n lowercase 32-char hex strings, built straight into an Arrow buffer."""
    n = hashes.shape[0]
    data = np.ascontiguousarray(hashes.astype(">u8")).tobytes().hex().encode("ascii")
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
