"""The fleet model: nodes, accounts and projects, and the true rollup cells of one node-hour.

Everything is drawn with numpy from seeds derived from (spec.seed, date, node, hour), so any
node-hour can be generated on its own (streaming) and comes out the same as in a whole day.
Cells are drawn as integer codes, aggregated like a real node aggregates requests into
(window, tenant, dimensions) cells, and only then turned into strings, vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pyarrow as pa

from usage_etl.simulator import ids
from usage_etl.simulator.spec import FleetSpec

KINDS = ("xcode", "gradle", "nx", "metro", "module", "reapi", "script")
KIND_WEIGHTS = np.array([0.18, 0.22, 0.15, 0.10, 0.13, 0.12, 0.10])
# Mean artifact size per kind (bytes); xcode archives are big, scripts tiny.
KIND_MEAN_BYTES = np.array([40e6, 4e6, 1.5e6, 0.8e6, 0.3e6, 0.15e6, 0.05e6])
UNBOUND_KIND = KINDS.index("script")  # cacheable scripts are not bound to a project
# (direction, operation); downloads dominate, `exists` checks move no bytes.
OPS = (("egress", "download"), ("ingress", "upload"), ("egress", "exists"))
OP_WEIGHTS = np.array([0.6, 0.12, 0.28])
DOWNLOAD, UPLOAD, EXISTS = 0, 1, 2
PATHS = ("public_internet", "private_network", "unknown")
PUBLIC, PRIVATE, UNKNOWN = 0, 1, 2
UNKNOWN_PATH_SHARE = 0.03
WINDOW_CHOICES = (3600, 600, 60)
NAMED_ACCOUNTS = ("globex", "acme", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
PROJECT_WORDS = ("ios", "android", "web", "backend", "infra", "ml", "docs", "monorepo")
_DIRECTIONS = pl.Series("direction", [d for d, _ in OPS], dtype=pl.String)
_OPERATIONS = pl.Series("operation", [o for _, o in OPS], dtype=pl.String)
_KINDS = pl.Series("artifact_kind", KINDS, dtype=pl.String)
_PATHS = pl.Series("network_path", PATHS, dtype=pl.String)
MICROS = 1_000_000
HOUR_US = 3600 * MICROS


@dataclass(frozen=True)
class Node:
    """One cache node and the habits of its firmware."""

    index: int
    node_id: str
    region: str
    window_seconds: int
    format: str  # "parquet" | "ndjson.gz"
    files_per_hour: int
    writes_network_path: bool  # older firmware omits the column (readers default to unknown)
    naive_timestamps: bool  # Parquet timestamps without a time zone (naive = UTC)
    peak_hour: int  # local busy hour, in UTC


@dataclass
class Cells:
    """The true rollup cells of one node-hour: contract columns plus their event-id hashes."""

    frame: pl.DataFrame
    hashes: np.ndarray  # (n, 2) uint64, row-aligned with frame
    # Integer codes per row (acct, proj, op, kind, path, window_us), row-aligned with frame.
    codes: dict[str, np.ndarray]


def _node_format(spec: FleetSpec, index: int) -> str:
    if spec.format == "mixed":
        return "parquet" if index % 2 == 0 else "ndjson.gz"
    return "parquet" if spec.format == "parquet" else "ndjson.gz"


def _build_nodes(spec: FleetSpec) -> tuple[Node, ...]:
    nodes = []
    for i in range(spec.nodes):
        region_index = i % len(spec.regions)
        window = WINDOW_CHOICES[i % len(WINDOW_CHOICES)]
        fmt = _node_format(spec, i)
        nodes.append(
            Node(
                index=i,
                node_id=f"{spec.regions[region_index]}-cache-{i:02d}",
                region=spec.regions[region_index],
                window_seconds=window,
                format=fmt,
                files_per_hour=2 if window == 60 else 1,
                writes_network_path=i % 5 != 4,
                naive_timestamps=fmt == "parquet" and i % 4 == 2,
                peak_hour=(16 - 7 * region_index) % 24,
            )
        )
    return tuple(nodes)


def _account_names(count: int) -> list[str]:
    if count == 1:
        return ["acme"]  # the price book's `pro` account is always in the fleet
    named = list(NAMED_ACCOUNTS[:count])
    return named + [f"acct-{i:04d}" for i in range(len(named), count)]


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer shares of `total` proportional to weights, summing exactly to total."""
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    short = total - int(base.sum())
    if short:
        order = np.argsort(-(exact - base).ravel(), kind="stable")[:short]
        base.ravel()[order] += 1
    return base


class Fleet:
    """Nodes, accounts (Zipf-like sizes) and projects, fixed by the FleetSpec."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        self.nodes = _build_nodes(spec)
        self.accounts = _account_names(spec.accounts)
        ranks = np.arange(1, spec.accounts + 1, dtype=np.float64)
        self.account_cum = np.cumsum(1.0 / ranks**spec.zipf_exponent)
        self.n_projects = rng.integers(0, spec.max_projects + 1, spec.accounts)
        if "acme" in self.accounts:
            acme = self.accounts.index("acme")
            self.n_projects[acme] = max(1, self.n_projects[acme])
        self.slots = spec.max_projects + 1  # project slot 0 = no project
        self.project_ids = [
            [None] + [self._project_name(a, j) for j in range(spec.max_projects)]
            for a in self.accounts
        ]
        self.account_series = pl.Series("account_id", self.accounts, dtype=pl.String)
        self._project_series = pl.Series(
            "project_id", [p for row in self.project_ids for p in row], dtype=pl.String
        )
        node_weights = rng.lognormal(0.0, 0.4, spec.nodes)
        hours = np.arange(24)
        diurnal = np.stack(
            [1 + 0.6 * np.cos(2 * np.pi * (hours - n.peak_hour) / 24) for n in self.nodes]
        )
        self.unit_rows = _largest_remainder(spec.rows_per_day, node_weights[:, None] * diurnal)
        self._dim_hash = self._dimension_hashes()
        self._node_by_id = {n.node_id: n for n in self.nodes}
        self.account_array = pa.array(self.accounts, pa.string())
        self.project_array = self._project_series.to_arrow()

    @staticmethod
    def _project_name(account: str, j: int) -> str:
        word = PROJECT_WORDS[j] if j < len(PROJECT_WORDS) else f"p{j}"
        return f"{account}-{word}"

    def node(self, node_id: str) -> Node:
        return self._node_by_id[node_id]

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    @property
    def project_map(self) -> dict[str, list[str]]:
        return {
            a: [p for p in row[1 : 1 + n] if p]
            for a, row, n in zip(self.accounts, self.project_ids, self.n_projects, strict=True)
        }

    # -- event ids -----------------------------------------------------------------------------

    def _dimension_hashes(self) -> np.ndarray:
        """64-bit hash of (account, project, direction, operation, kind, path) per dim code."""
        a, s = len(self.accounts), self.slots
        grid = np.indices((a, s, len(OPS), len(KINDS), len(PATHS))).reshape(5, -1)
        acct_h = ids.string_hashes(self.accounts)
        proj_h = ids.string_hashes(p for row in self.project_ids for p in row)
        dir_h = ids.string_hashes(d for d, _ in OPS)
        op_h = ids.string_hashes(o for _, o in OPS)
        kind_h = ids.string_hashes(KINDS)
        path_h = ids.string_hashes(PATHS)
        components = [
            acct_h[grid[0]],
            proj_h[grid[0] * s + grid[1]],
            dir_h[grid[2]],
            op_h[grid[2]],
            kind_h[grid[3]],
            path_h[grid[4]],
        ]
        return ids.combine(components, grid.shape[1])[:, 0]

    # -- cells ---------------------------------------------------------------------------------

    def cells(self, day: date, node: Node, hour: int) -> Cells:
        """The true rollup cells node `node` aggregated in `hour` of `day`."""
        target = int(self.unit_rows[node.index, hour])
        rng = np.random.default_rng([self.spec.seed, day.toordinal(), node.index, hour, 1])
        codes, requests, nbytes = self._draw_cells(rng, node, target)
        return self._materialize(rng, day, node, hour, codes, requests, nbytes)

    def _draw_cells(self, rng: np.random.Generator, node: Node, target: int):
        """Draw requests until `target` distinct cells exist (or the cell space is exhausted),
        summing draws that hit the same cell, then keep exactly `target` cells."""
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        have, want = 0, target
        for attempt in range(5):
            if want <= 0:
                break
            # Top-up rounds draw from the long tail too: a busy node-hour of a big account
            # saturates its few cells, while small accounts still have room.
            parts.append(self._draw(rng, node, want, long_tail=attempt > 0))
            codes, requests, nbytes = _aggregate(
                *(np.concatenate(x) for x in zip(*parts, strict=False))
            )
            gained, have = len(codes) - have, len(codes)
            if have >= target or gained < 0.02 * want:
                break
            want = int((target - have) * 1.5) + 8
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        if len(codes) > target:
            keep = np.sort(rng.choice(len(codes), target, replace=False))
            codes, requests, nbytes = codes[keep], requests[keep], nbytes[keep]
        return codes, requests, nbytes

    def _draw(self, rng: np.random.Generator, node: Node, k: int, long_tail: bool = False):
        a = len(self.accounts)
        windows = 3600 // node.window_seconds
        w = rng.integers(0, windows, k)
        if long_tail:
            acct = rng.integers(0, a, k)
        else:
            acct = np.minimum(
                np.searchsorted(self.account_cum, rng.random(k) * self.account_cum[-1]), a - 1
            )
        op = np.searchsorted(np.cumsum(OP_WEIGHTS), rng.random(k) * OP_WEIGHTS.sum())
        kind = np.searchsorted(np.cumsum(KIND_WEIGHTS), rng.random(k) * KIND_WEIGHTS.sum())
        op, kind = np.minimum(op, len(OPS) - 1), np.minimum(kind, len(KINDS) - 1)
        n_proj = self.n_projects[acct]
        bound = (kind != UNBOUND_KIND) & (n_proj > 0)
        proj = np.where(bound, 1 + (rng.random(k) * np.maximum(n_proj, 1)).astype(np.int64), 0)
        if node.writes_network_path:
            u = rng.random(k)
            private = self.spec.private_network_share
            path = np.where(u < private, PRIVATE, PUBLIC)
            path = np.where((u >= private) & (u < private + UNKNOWN_PATH_SHARE), UNKNOWN, path)
        else:
            path = np.full(k, UNKNOWN)
        lam = 2.0 * np.sqrt(node.window_seconds / 60)
        requests = 1 + rng.poisson(lam, k) * np.where(op == EXISTS, 3, 1)
        size = KIND_MEAN_BYTES[kind] * rng.lognormal(-0.3, 0.8, k)
        size = np.where(op == UPLOAD, size * 0.5, np.where(op == EXISTS, 0.0, size))
        nbytes = (requests * size).astype(np.int64)
        dims = (((acct * self.slots + proj) * len(OPS) + op) * len(KINDS) + kind) * len(
            PATHS
        ) + path
        codes = w.astype(np.int64) * self.dim_space + dims
        return codes, requests.astype(np.int64), nbytes

    @property
    def dim_space(self) -> int:
        return len(self.accounts) * self.slots * len(OPS) * len(KINDS) * len(PATHS)

    def _materialize(self, rng, day, node, hour, codes, requests, nbytes) -> Cells:
        n = len(codes)
        w, dims = np.divmod(codes, self.dim_space)
        rest, path = np.divmod(dims, len(PATHS))
        rest, kind = np.divmod(rest, len(KINDS))
        rest, op = np.divmod(rest, len(OPS))
        acct, proj = np.divmod(rest, self.slots)
        hour_start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
        hour_us = int(hour_start.timestamp()) * MICROS
        window_us = hour_us + w * node.window_seconds * MICROS
        # A node emits a window's cells together, a little after the window closes.
        windows = 3600 // node.window_seconds
        delay = rng.integers(5 * MICROS, 300 * MICROS, windows)
        emitted_us = window_us + node.window_seconds * MICROS + delay[w]
        hashes = ids.combine(
            [ids.string_hash(node.node_id), window_us.astype(np.uint64), self._dim_hash[dims]], n
        )
        frame = pl.DataFrame(
            {
                "schema_version": np.ones(n, dtype=np.int64),
                "event_id": pl.Series(ids.hex_ids(hashes)),
                "node_id": pl.repeat(node.node_id, n, dtype=pl.String, eager=True),
                "region": pl.repeat(node.region, n, dtype=pl.String, eager=True),
                "account_id": self.account_series.gather(acct),
                "project_id": self._project_series.gather(acct * self.slots + proj),
                "direction": _DIRECTIONS.gather(op),
                "operation": _OPERATIONS.gather(op),
                "artifact_kind": _KINDS.gather(kind),
                "network_path": _PATHS.gather(path),
                "window_start": pl.Series(window_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "window_seconds": np.full(n, node.window_seconds, dtype=np.int64),
                "bytes": nbytes,
                "request_count": requests,
                "emitted_at": pl.Series(emitted_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            }
        )
        codes = {"acct": acct, "proj": proj, "op": op, "kind": kind, "window_us": window_us}
        return Cells(frame=frame, hashes=hashes, codes=codes)


def _aggregate(codes: np.ndarray, requests: np.ndarray, nbytes: np.ndarray):
    """Sum draws per cell code (exact integer sums), codes sorted ascending."""
    if len(codes) == 0:
        return codes, requests, nbytes
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return (
        sorted_codes[starts],
        np.add.reduceat(requests[order], starts),
        np.add.reduceat(nbytes[order], starts),
    )
