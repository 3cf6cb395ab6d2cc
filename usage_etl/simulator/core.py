"""`Simulator`: whole days in memory for tests, or streamed node-hour by node-hour at scale."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from usage_etl.simulator import cache_events as events
from usage_etl.simulator import truth, writer
from usage_etl.simulator.faults import UnitContext, is_silent, unit_files
from usage_etl.simulator.fleet import Fleet, Node
from usage_etl.simulator.model import SimDay, SimFile
from usage_etl.simulator.spec import Fault, FaultSpec, FleetSpec


@dataclass
class Unit:
    """What one node delivers for one hour, plus the cache events of its traffic."""

    node: Node
    hour: int
    files: list[SimFile]
    cache_events: pa.Table
    silent: bool
    rows: int  # true cells


@dataclass
class StreamResult:
    """A streamed day: counts and the aggregated truth (no rows kept)."""

    day: date
    rows: int = 0  # true rollup cells generated
    rows_written: int = 0  # rows in all rollup files (copies, bad rows included)
    files: int = 0
    delivered: int = 0  # objects passed to on_unit's selection
    bytes_written: int = 0
    cache_events: int = 0
    faults: Counter = field(default_factory=Counter)
    quarantine_on_time: Counter = field(default_factory=Counter)
    quarantine_all: Counter = field(default_factory=Counter)
    conflicts: set[str] = field(default_factory=set)
    _on_time: list[pl.DataFrame] = field(default_factory=list, repr=False)
    _all: list[pl.DataFrame] = field(default_factory=list, repr=False)

    def expected_usage_daily(self, include_late: bool = False) -> pl.DataFrame:
        return truth.merge_usage(self._all if include_late else self._on_time)

    def add(self, unit: Unit, partial: UnitTruth, delivered: int) -> None:
        self.rows += unit.rows
        self.files += len(unit.files)
        self.delivered += delivered
        self.cache_events += unit.cache_events.num_rows
        for f in unit.files:
            self.rows_written += f.rows.height if f.rows is not None else 0
            self.bytes_written += len(f.body)
            self.faults.update(f.faults)
        self._on_time.append(partial.usage_on_time)
        self._all.append(partial.usage_all)
        self.quarantine_on_time.update(partial.quarantine_on_time)
        self.quarantine_all.update(partial.quarantine_all)
        self.conflicts |= partial.conflicts
        if len(self._all) >= 2048:  # bound the number of partial frames, not their rows
            self._on_time = [truth.merge_usage(self._on_time, sort=False)]
            self._all = [truth.merge_usage(self._all, sort=False)]


@dataclass
class UnitTruth:
    """The truth of one node-hour, computed next to its generation (in the worker)."""

    usage_on_time: pl.DataFrame
    usage_all: pl.DataFrame
    quarantine_on_time: dict[str, int]
    quarantine_all: dict[str, int]
    conflicts: set[str]

    @classmethod
    def of(cls, unit: Unit) -> UnitTruth:
        on_time = [f for f in unit.files if not f.is_late]
        late = len(on_time) < len(unit.files)
        usage_all = truth.expected_usage_daily(unit.files, sort=False)
        quarantine_all = truth.expected_quarantine(unit.files)
        conflicts = set()
        if any(Fault.CONFLICT in f.faults for f in unit.files):
            conflicts = truth.conflicting_event_ids(unit.files)
        return cls(
            usage_on_time=truth.expected_usage_daily(on_time, sort=False) if late else usage_all,
            usage_all=usage_all,
            quarantine_on_time=truth.expected_quarantine(on_time) if late else quarantine_all,
            quarantine_all=quarantine_all,
            conflicts=conflicts,
        )


class Simulator:
    """A deterministic fleet: the same (FleetSpec, FaultSpec, date) always gives the same day."""

    def __init__(self, fleet: FleetSpec | None = None, faults: FaultSpec | None = None):
        self.fleet_spec = fleet or FleetSpec()
        self.fault_spec = faults or FaultSpec()
        self.fleet = Fleet(self.fleet_spec)

    # -- generation ----------------------------------------------------------------------------

    def unit(self, day: date, node: Node, hour: int, cache_events: bool = True) -> Unit:
        """One node-hour; `cache_events=False` leaves its cache events empty (they have their
        own random stream: the files are the same either way)."""
        seed = [self.fleet_spec.seed, day.toordinal(), node.index, hour]
        cells = self.fleet.cells(day, node, hour)
        ctx = UnitContext(day, hour, node, self.fault_spec, np.random.default_rng([*seed, 2]))
        silent = is_silent(ctx)
        files = [] if silent else unit_files(cells, ctx)
        drop = self.fault_spec.cache_event_drop_rate
        table = events.empty()
        if cache_events:
            rng = np.random.default_rng([*seed, 3])
            table = events.cache_events(cells, self.fleet, rng, drop)
        return Unit(node, hour, files, table, silent, cells.frame.height)

    def units(self, day: date, workers: int = 1, cache_events: bool = True) -> Iterator[Unit]:
        """Every node-hour of the day, in (hour, node) order; workers > 1 generates ahead."""

        def unit(node: Node, hour: int) -> Unit:
            return self.unit(day, node, hour, cache_events)

        yield from self._map(day, unit, workers)

    def _map(self, day: date, fn: Callable, workers: int) -> Iterator:
        pairs = [(node, hour) for hour in range(24) for node in self.fleet.nodes]
        if workers <= 1:
            yield from (fn(node, hour) for node, hour in pairs)
            return
        with ThreadPoolExecutor(workers) as pool:
            # Bounded look-ahead: at most a few node-hours wait in memory.
            pending = []
            for pair in pairs:
                pending.append(pool.submit(fn, *pair))
                if len(pending) > 2 * workers:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()

    def generate_day(self, day: date, progress: bool = False, cache_events: bool = True) -> SimDay:
        """The whole day in memory; `cache_events=False` skips the cache events (an empty
        table; the files are the same), for callers that only upload files."""
        files: list[SimFile] = []
        tables: list[pa.Table] = []
        silent: list[tuple[str, int]] = []
        units = self.units(day, cache_events=cache_events)
        for unit in _progress(units, 24 * len(self.fleet.nodes), day, progress):
            files.extend(unit.files)
            tables.append(unit.cache_events)
            if unit.silent:
                silent.append((unit.node.node_id, unit.hour))
        return SimDay(
            day=day,
            files=files,
            cache_events=pa.concat_tables(tables) if tables else events.empty(),
            silent_node_hours=silent,
            under_reporting_nodes=self.fault_spec.under_reporting_nodes,
        )

    def generate_range(self, start: date, end: date) -> list[SimDay]:
        """Every day from start to end, both included (keeps all rows: use for small fleets)."""
        return [self.generate_day(d) for d in date_range(start, end)]

    def stream_day(
        self,
        day: date,
        on_unit: Callable[[list[SimFile]], None] | None = None,
        on_cache_events: Callable[[pa.Table], None] | None = None,
        select: Callable[[SimFile], bool] | None = None,
        progress: bool = False,
        workers: int = 2,
    ) -> StreamResult:
        """Generate a day node-hour by node-hour without keeping rows: `on_unit` gets each
        node-hour's selected files (default: on time) in upload order; the truth accumulates
        aggregated."""
        choose = select or (lambda f: not f.is_late)
        result = StreamResult(day)

        def generate(node: Node, hour: int) -> tuple[Unit, UnitTruth]:
            unit = self.unit(day, node, hour)
            return unit, UnitTruth.of(unit)

        pairs = self._map(day, generate, workers)
        for unit, partial in _progress(pairs, 24 * len(self.fleet.nodes), day, progress):
            chosen = [f for f in unit.files if choose(f)]
            if on_unit and chosen:
                on_unit(chosen)
            if on_cache_events and unit.cache_events.num_rows:
                on_cache_events(unit.cache_events)
            result.add(unit, partial, len(chosen))
        return result

    # -- delivery ------------------------------------------------------------------------------

    @staticmethod
    def upload(
        files: list[SimFile],
        s3_client,
        bucket: str,
        prefix: str,
        include_late: bool = False,
        workers: int = 1,
    ) -> int:
        """PUT files in list order under `prefix`; late files only if include_late; workers > 1
        PUTs on threads, in order per key only (writer.upload)."""
        return writer.upload(files, s3_client, bucket, prefix, include_late, workers)

    @staticmethod
    def write_cache_events(warehouse, day: SimDay | pa.Table, table: str = "cache_events") -> int:
        """Insert a day's (or a table of) cache events into `table` of the warehouse."""
        data = day.cache_events if isinstance(day, SimDay) else day
        warehouse.insert_arrow(table, data)
        return data.num_rows


def date_range(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _progress(units: Iterator, total: int, day: date, enabled: bool) -> Iterator:
    if not enabled:
        yield from units
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"simulate {day}", total=total, rows=0)
        rows = 0
        for item in units:
            unit = item[0] if isinstance(item, tuple) else item
            rows += unit.rows
            bar.update(task, advance=1, rows=rows)
            yield item
