"""Load one UTC day of rollup objects: list, read, validate, stage, quarantine, record.

Objects whose current ledger entry has the same ETag were decided before and are skipped, so a
re-run reads only what is new (late files) or changed (overwritten objects). Reading and
parsing run ahead on a small thread pool (S3, gzip and polars release the GIL) while the main
thread inserts; at most `prefetch` files are held in memory, and inserts are batched, so memory
does not grow with the size of the day.

Order of writes per batch: staged rows, quarantined rows, then the ledger entries that make
them count. A crash before the ledger write leaves rows no reader counts; the re-run loads the
objects again under a new load id.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from usage_etl import crash_points
from usage_etl.landing import LandedObject, Landing
from usage_etl.rollups.schema import IgnoreReason, RollupKey
from usage_etl.settings import tuning
from usage_etl.usage import ledger, native
from usage_etl.usage.fetch import FetchDirectories, Fetched, FetchedFiles, Fetcher
from usage_etl.usage.registry import NodeAuthorization
from usage_etl.warehouse.client import Warehouse

if TYPE_CHECKING:
    import polars as pl

    from usage_etl.usage.readers import FileQuarantined

log = logging.getLogger(__name__)

# Rows per insert batch; the reliability tests lower it to crash between batches.
# A 1M-row Arrow insert costs chDB ~1 GiB of transient memory; 250k rows insert as fast
# (measured ~1.8 s per 1M rows either way) with a quarter of the peak.
BATCH_ROWS = tuning().ingest_batch_rows  # USAGE_ETL_INGEST_BATCH_ROWS


class StorageError(RuntimeError):
    """S3 failed while reading a named object (transient: the run may be retried)."""


@dataclass
class IngestReport:
    objects_listed: int = 0
    objects_skipped: int = 0  # decided by an earlier run (same ETag)
    objects_loaded: int = 0
    objects_quarantined: int = 0
    objects_ignored: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    quarantined_by_rule: collections.Counter = field(default_factory=collections.Counter)
    quarantined_files: list[tuple[str, str]] = field(default_factory=list)
    ignored_objects: list[tuple[str, str]] = field(default_factory=list)
    objects_read_natively: int = 0  # decided by ClickHouse reading S3 itself (native.py)
    objects_handed_back: dict[str, str] = field(default_factory=dict)  # key -> why


def list_day(landing: Landing, day: date) -> list[LandedObject]:
    try:
        return landing.objects_of_day(day)
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(
            f"listing s3://{landing.bucket}/{landing.day_prefix(day)} failed: {exc}"
        ) from None


@dataclass
class _FileOutcome:
    obj: LandedObject
    etag: str
    good: pl.DataFrame | None = None
    bad: pl.DataFrame | None = None
    file_rule: FileQuarantined | None = None
    node_tag: str = ""  # NodeAuthorization.tag the rows were judged with


def _read_and_validate(
    landing: Landing,
    obj: LandedObject,
    tenant_for_node: Callable[[str], NodeAuthorization],
    copy: Fetched | None = None,
) -> _FileOutcome:
    """`copy`: the object as fetch.py got it for the native path (bytes and their ETag), read
    instead of a second GET."""
    # The Python readers (polars) load only when a file takes this path, not in every run.
    from usage_etl.usage.readers import FileQuarantined, read_rollup_file
    from usage_etl.usage.validate import validate

    key: RollupKey = obj.kind  # type: ignore[assignment]
    if copy is not None and copy.path:
        with open(copy.path, "rb") as local:
            body, etag = local.read(), copy.etag
    else:
        try:
            response = landing.client.get_object(Bucket=landing.bucket, Key=obj.key)
            body = response["Body"].read()
            etag = response["ETag"].strip('"')
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"reading s3://{landing.bucket}/{obj.key} failed: {exc}") from None
    outcome = _FileOutcome(obj, etag)
    try:
        parsed = read_rollup_file(body, key.format)
    except FileQuarantined as exc:
        outcome.file_rule = exc
        return outcome
    authorization = tenant_for_node(key.node_id)
    validated = validate(parsed.frame, key, authorization)
    outcome.good, outcome.bad = validated.good, validated.bad
    outcome.node_tag = authorization.tag
    return outcome


class _Batch:
    """Staged rows, quarantined rows and ledger rows written together."""

    def __init__(self, warehouse: Warehouse, day: date, load_id: str):
        self.warehouse, self.day, self.load_id = warehouse, day, load_id
        self.good: list[pl.DataFrame] = []
        self.bad: list[pl.DataFrame] = []
        self.ledger_rows: list[list] = []
        self.rows = 0

    def add(self, outcome: _FileOutcome, status: str, reason: str) -> None:
        obj = outcome.obj
        source = {"source_key": obj.key, "source_etag": outcome.etag}
        good_rows = bad_rows = 0
        if outcome.good is not None and outcome.good.height:
            self.good.append(_with_source(outcome.good, source))
            good_rows = outcome.good.height
        if outcome.bad is not None and outcome.bad.height:
            self.bad.append(_with_source(outcome.bad, source))
            bad_rows = outcome.bad.height
        if outcome.file_rule is not None:
            self.bad.append(_file_rule_frame(outcome.file_rule, source))
        kind = obj.kind
        self.ledger_rows.append(
            ledger.ledger_row(
                day=self.day, key=obj.key, etag=outcome.etag, size=obj.size,
                last_modified=obj.last_modified,
                node_id=kind.node_id if isinstance(kind, RollupKey) else "",
                hour=kind.hour if isinstance(kind, RollupKey) else 0,
                fmt=kind.format if isinstance(kind, RollupKey) else "",
                status=status, reason=reason, rows_read=good_rows + bad_rows,
                rows_loaded=good_rows, rows_quarantined=bad_rows, load_id=self.load_id,
                recorded_at=datetime.now(UTC),
            )
        )  # fmt: skip
        self.rows += good_rows + bad_rows

    def flush(self) -> None:
        now = datetime.now(UTC)
        if self.good or self.bad:  # frames exist only where the Python readers ran
            import polars as pl
        if self.good:
            staged = pl.concat(self.good).with_columns(
                pl.lit(self.day).alias("day"), pl.lit(self.load_id).alias("run_id")
            )
            self.warehouse.insert_arrow("rollup_rows", _arrow(staged))
        if self.bad:
            quarantined = pl.concat(
                [b if "scope" in b.columns else b.with_columns(pl.lit("row").alias("scope"))
                 for b in self.bad],
                how="diagonal_relaxed",
            ).with_columns(
                pl.lit(self.day).alias("day"), pl.lit(self.load_id).alias("run_id"),
                pl.lit(now).dt.replace_time_zone("UTC").alias("quarantined_at"),
            )  # fmt: skip
            self.warehouse.insert_arrow("quarantined_rows", _arrow(quarantined))
        crash_points.fault_point("ingest.before_ledger")
        if self.ledger_rows:
            ledger.record(self.warehouse, self.ledger_rows)
        self.good, self.bad, self.ledger_rows, self.rows = [], [], [], 0


# polars is imported where frames exist, i.e. only for files the Python readers took.
def _with_source(frame: pl.DataFrame, source: dict[str, str]) -> pl.DataFrame:
    import polars as pl

    return frame.with_columns(**{k: pl.lit(v) for k, v in source.items()})


def _file_rule_frame(rule: FileQuarantined, source: dict[str, str]) -> pl.DataFrame:
    import polars as pl

    return pl.DataFrame(
        {
            "source_row": [0], "rule": [rule.rule.value], "field": [""], "value": [""],
            "detail": [rule.detail[:1000]], **{k: [v] for k, v in source.items()},
        },
        schema_overrides={"source_row": pl.UInt32},
    ).with_columns(pl.lit("file").alias("scope"))  # fmt: skip


def _arrow(frame: pl.DataFrame):
    # polars' native Arrow (string views) inserts ~40% faster than large_string copies.
    return frame.to_arrow()


def _prefetched(
    pool: ThreadPoolExecutor, objects: list[LandedObject], work, prefetch: int
) -> Iterator[_FileOutcome]:
    """Results in order, with at most `prefetch` files read ahead."""
    pending: collections.deque[Future] = collections.deque()
    source = iter(objects)
    for obj in source:
        pending.append(pool.submit(work, obj))
        if len(pending) >= prefetch:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(source, None)
        if nxt is not None:
            pending.append(pool.submit(work, nxt))


def ingest_day(
    warehouse: Warehouse,
    landing: Landing,
    day: date,
    load_id: str,
    tenant_for_node: Callable[[str], NodeAuthorization] = lambda node: NodeAuthorization(),
    prefetch: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
    s3_access: native.S3Access | None = None,
    prefetched: PrefetchedDay | None = None,
) -> IngestReport:
    """Decide every new or changed object of the day. With `s3_access`, ClickHouse reads the
    objects itself first (native.py) and Python reads only what it hands back. With the
    embedded engine the small objects are fetched once first (fetch.py); `prefetched`: the
    day's listing and fetched objects, got while the day before was processed (`Prefetcher`).
    Its files are removed when the day is done, succeeded or failed."""
    listed, fetched = (prefetched.listed, prefetched.files) if prefetched else (None, None)
    try:
        return _decide(warehouse, landing, day, load_id, tenant_for_node, prefetch,
                       on_progress, s3_access, listed, fetched)  # fmt: skip
    finally:
        if fetched is not None:
            fetched.close()


def _decide(
    warehouse: Warehouse,
    landing: Landing,
    day: date,
    load_id: str,
    tenant_for_node: Callable[[str], NodeAuthorization],
    prefetch: int,
    on_progress: Callable[[int, int], None] | None,
    s3_access: native.S3Access | None,
    listed: list[LandedObject] | None,
    fetched: FetchedFiles | None,
) -> IngestReport:
    """`listed`, `fetched`: the day's listing and fetched objects when prefetched."""
    report = IngestReport()
    listed = listed if listed is not None else list_day(landing, day)
    report.objects_listed = len(listed)
    crash_points.fault_point("ingest.listed")
    current = ledger.current_entries(warehouse, day)
    batch = _Batch(warehouse, day, load_id)
    todo: list[LandedObject] = []
    for obj in listed:
        seen = current.get(obj.key)
        if seen is not None and seen.etag == obj.etag and _same_rules(seen, obj, tenant_for_node):
            report.objects_skipped += 1
        elif isinstance(obj.kind, IgnoreReason):
            batch.add(_FileOutcome(obj, obj.etag), "ignored", obj.kind.value)
            report.objects_ignored += 1
            report.ignored_objects.append((obj.key, obj.kind.value))
        else:
            todo.append(obj)

    own: FetchedFiles | None = None
    try:
        if s3_access is not None:
            if fetched is None and warehouse.embedded:
                fetched = own = fetch_day(landing, todo)
            todo = _load_natively(warehouse, s3_access, landing.bucket, day, load_id, todo,
                                  tenant_for_node, report, fetched)  # fmt: skip
        _read_in_python(landing, warehouse, day, load_id, todo, tenant_for_node, prefetch,
                        on_progress, report, batch, fetched)  # fmt: skip
    finally:
        if own is not None:
            own.close()
    return report


def _read_in_python(
    landing: Landing,
    warehouse: Warehouse,
    day: date,
    load_id: str,
    todo: list[LandedObject],
    tenant_for_node: Callable[[str], NodeAuthorization],
    prefetch: int,
    on_progress: Callable[[int, int], None] | None,
    report: IngestReport,
    batch: _Batch,
    fetched: FetchedFiles | None,
) -> None:
    def work(obj: LandedObject) -> _FileOutcome:
        copy = fetched.get(obj.key) if fetched is not None else None
        return _read_and_validate(landing, obj, tenant_for_node, copy)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="rollup-read") as pool:
        try:
            for done, outcome in enumerate(_prefetched(pool, todo, work, prefetch), start=1):
                _account(report, batch, outcome)
                if batch.rows >= BATCH_ROWS:
                    batch.flush()
                    crash_points.fault_point("ingest.batch_flushed")
                if on_progress:
                    on_progress(done, len(todo))
        except BaseException:
            # A failed read fails the step now: reads still queued would each wait out the
            # S3 timeouts again against the same endpoint (docs/operations.md, timeouts).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    batch.flush()


@dataclass
class PrefetchedDay:
    """A day's listing and its fetched small objects, got ahead of the day (`Prefetcher`)."""

    listed: list[LandedObject]
    files: FetchedFiles | None


class Prefetcher:
    """In a range run, lists and fetches the next day in a background thread while this day is
    validated, inserted and recorded (chDB releases the GIL during a query). At most one day is
    fetched ahead, so at most two days' small objects are on local disk. A prefetch that fails
    is logged (the day and the error's class, no key) and the day then lists and fetches for
    itself: prefetching never fails a run by itself. The day's listing is then a few seconds
    older than its processing, as if the run had started earlier: a file landing in between is
    a late file, picked up by the late-file sensor's re-run as any other."""

    def __init__(self, landing: Landing):
        self.landing = landing
        self._directories = FetchDirectories()  # reused day after day, removed at `close()`
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="day-prefetch")
        self._pending: dict[date, Future] = {}

    def start(self, day: date) -> None:
        self._pending[day] = self._pool.submit(self._fetch, day)

    def _fetch(self, day: date) -> PrefetchedDay:
        listed = self.landing.objects_of_day(day)
        return PrefetchedDay(listed, fetch_day(self.landing, listed, self._directories))

    def take(self, day: date) -> PrefetchedDay | None:
        """The day as prefetched (its files are the caller's to close), or None."""
        future = self._pending.pop(day, None)
        if future is None:
            return None
        try:
            return future.result()
        except Exception as exc:
            log.warning("prefetching %s failed (%s); the day lists and fetches for itself",
                        day, type(exc).__name__)  # fmt: skip
            return None

    def close(self) -> None:
        """Wait for a prefetch in flight and remove what it fetched."""
        for future in self._pending.values():
            future.cancel()
        self._pool.shutdown(wait=True)
        for future in self._pending.values():
            if not future.cancelled() and future.exception() is None:
                day = future.result()
                if day.files is not None:
                    day.files.close()
        self._pending.clear()
        self._directories.close()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fetch_day(
    landing: Landing, objects: list[LandedObject], directories: FetchDirectories | None = None
) -> FetchedFiles | None:
    """Fetch the objects the embedded engine reads from local copies (native.fetch_suffix),
    or None when there are none; into one of `directories` when given (a range run's)."""
    wanted = []
    for obj in objects:
        if isinstance(obj.kind, RollupKey):
            suffix = native.fetch_suffix(
                native.Candidate(obj.key, obj.etag, obj.kind, size=obj.size)
            )
            if suffix is not None:
                wanted.append((obj.key, suffix))
    if not wanted:
        return None
    fetcher = Fetcher(landing.client, judge=native.eligible_parquet)
    return fetcher.fetch(landing.bucket, wanted, directories)


def _load_natively(
    warehouse: Warehouse,
    access: native.S3Access,
    bucket: str,
    day: date,
    load_id: str,
    todo: list[LandedObject],
    tenant_for_node: Callable[[str], NodeAuthorization],
    report: IngestReport,
    fetched: FetchedFiles | None = None,
) -> list[LandedObject]:
    """Load what ClickHouse can decide alone; return the objects Python must still read.

    Rows of this path carry load ids of their own (`<load_id>.s3.<attempt>`): a file handed
    back is re-read by Python under the run's load id, and the rows this path inserted for it
    then never count."""
    listed = {obj.key: obj for obj in todo}
    candidates = []
    for obj in todo:
        if not isinstance(obj.kind, RollupKey):
            continue
        authorization = tenant_for_node(obj.kind.node_id)
        if authorization.reject_unregistered or not native.plain_key(obj.key):
            continue
        candidates.append(
            native.Candidate(obj.key, obj.etag, obj.kind, authorization.only_account, obj.size)
        )
    if not candidates:
        return todo

    recorded: set[str] = set()

    def record_chunk(decided: dict[str, native.Loaded]) -> None:
        rows = []
        for key, loaded in decided.items():
            obj = listed[key]
            kind: RollupKey = obj.kind  # type: ignore[assignment]
            rows.append(
                ledger.ledger_row(
                    day=day, key=key, etag=loaded.etag, size=obj.size,
                    last_modified=obj.last_modified, node_id=kind.node_id, hour=kind.hour,
                    fmt=kind.format, status="loaded", reason=tenant_for_node(kind.node_id).tag,
                    rows_read=loaded.rows, rows_loaded=loaded.rows, rows_quarantined=0,
                    load_id=loaded.load_id,
                    recorded_at=datetime.now(UTC),
                )
            )  # fmt: skip
            report.objects_loaded += 1
            report.rows_read += loaded.rows
            report.rows_loaded += loaded.rows
        if not rows:
            return
        crash_points.fault_point("ingest.before_ledger")
        ledger.record(warehouse, rows)
        recorded.update(decided)
        crash_points.fault_point("ingest.batch_flushed")

    try:
        result = native.load_objects(
            warehouse,
            access,
            bucket,
            day,
            candidates,
            f"{load_id}.s3",
            on_chunk=record_chunk,
            fetched=fetched.files if fetched is not None else None,
        )
    except native.Unreachable as exc:
        log.warning("ClickHouse cannot read the landing bucket, Python reads it: %s", exc)
        return [obj for obj in todo if obj.key not in recorded]
    report.objects_read_natively = len(result.loaded)
    report.objects_handed_back = dict(result.reasons)
    return [obj for obj in todo if obj.key not in result.loaded]


def _same_rules(
    seen: ledger.LedgerEntry, obj: LandedObject, tenant_for_node: Callable[[str], NodeAuthorization]
) -> bool:
    """Was this loaded object judged under the node authorization in force now?"""
    if seen.status != "loaded" or not isinstance(obj.kind, RollupKey):
        return True
    return seen.reason == tenant_for_node(obj.kind.node_id).tag


def _account(report: IngestReport, batch: _Batch, outcome: _FileOutcome) -> None:
    if outcome.file_rule is not None:
        rule = outcome.file_rule
        batch.add(outcome, "quarantined", f"{rule.rule.value}: {rule.detail}"[:1000])
        report.objects_quarantined += 1
        report.quarantined_by_rule[rule.rule.value] += 1
        report.quarantined_files.append((outcome.obj.key, rule.rule.value))
        return
    batch.add(outcome, "loaded", outcome.node_tag)
    good, bad = outcome.good.height, outcome.bad.height
    report.objects_loaded += 1
    report.rows_read += good + bad
    report.rows_loaded += good
    report.rows_quarantined += bad
    for rule, count in outcome.bad["rule"].value_counts().iter_rows():
        report.quarantined_by_rule[rule] += count


__all__ = ["IngestReport", "PrefetchedDay", "Prefetcher", "StorageError", "ingest_day", "list_day"]
