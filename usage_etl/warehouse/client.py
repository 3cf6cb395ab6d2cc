"""The one way this project talks to ClickHouse.

A `Warehouse` wraps a clickhouse-connect client for either backend:

* `chdb:///path` — the embedded engine. chDB allows one engine path per process and one process
  per path, so opening it takes an exclusive file lock next to the data folder. A second process
  waits a bounded time and then fails with a message naming the holder, instead of crashing in
  chDB's own initialisation.
* `http(s)://user:pass@host:port` — a server or cluster; no lock, any number of writers.

Nothing here runs at import time: a client is opened only by `Warehouse.open()`, which the
resources call inside runs (never at definitions load or in sensors).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from usage_etl.locks import flock_within
from usage_etl.settings import Settings, SettingsError, redact_url, tuning

if TYPE_CHECKING:  # pyarrow (+ numpy, ~0.2 CPU-s) only where Arrow data is passed
    import pyarrow as pa


class WarehouseError(RuntimeError):
    """A ClickHouse failure, with the DSN already redacted.

    `transient` is true for faults worth retrying (network, timeouts, overload); a bad query or
    bad data is not.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# ClickHouse error codes that describe load or connectivity rather than the query itself.
TRANSIENT_CODES = {159, 164, 202, 203, 209, 210, 252, 425, 999}
_CODE = re.compile(r"Code: (\d+)")


def _is_transient(exc: BaseException) -> bool:
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, OperationalError | ConnectionError | TimeoutError):
        return True
    match = _CODE.search(str(exc))
    return bool(match and int(match.group(1)) in TRANSIENT_CODES)


log = logging.getLogger(__name__)

# Statements slower than this many seconds are logged (their SQL text only: values are
# parameters, never part of it). Unset: no log.
SLOW_QUERY_SECONDS = tuning().log_slow_queries_seconds


def _log_if_slow(seconds: float, args: tuple) -> None:
    if SLOW_QUERY_SECONDS is None or seconds < SLOW_QUERY_SECONDS:
        return
    statement = args[0] if args and isinstance(args[0], str) else "insert"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    log.info(
        "slow statement %.2f s (process peak RSS so far %.2f GiB): %s",
        seconds, peak, " ".join(statement.split())[:160],
    )  # fmt: skip


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give it a timezone")
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"no JSONEachRow spelling for {type(value).__name__}")


def _install_fast_escape() -> bool:
    """clickhouse-connect spells every string parameter (each element of an array parameter
    too) with `binding.escape_str`, a Python generator over its characters: a range run's
    object keys, paths and ETags sent to several statements are ~2M characters, ~0.4 CPU-s per
    10 days. This is the same escaping (a backslash before each of `binding.must_escape`) done
    by one regular expression, and only when the string has such a character. The function
    is replaced in clickhouse-connect's module (its callers look it up there);
    tests/test_warehouse_escape.py compares it with the original and fails if an upgrade
    changes the original's spelling. False (left alone) when the module no longer has it."""
    from clickhouse_connect.driver import binding

    original = getattr(binding, "escape_str", None)
    must_escape = getattr(binding, "must_escape", None)
    if original is None or must_escape is None or getattr(original, "fast", False):
        return False
    special = re.compile("[" + re.escape("".join(must_escape)) + "]")
    backslash = binding.BS

    def escape_str(value: str) -> str:
        if special.search(value) is None:
            return value
        return special.sub(lambda m: backslash + m.group(), value)

    escape_str.fast = True  # type: ignore[attr-defined]
    escape_str.original = original  # type: ignore[attr-defined]
    binding.escape_str = escape_str
    return True


_install_fast_escape()


class EmbeddedEngineBusy(WarehouseError):
    """The embedded chDB engine is held by another process."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


# The embedded engine's allocator (chDB's jemalloc) reads JE_MALLOC_CONF once, when the library
# loads. Its built-in default suits a server: one arena per CPU, freed pages kept for 5 s. In a
# run's process, which runs one statement after another, that keeps memory freed by one
# statement out of reach of the next. One arena and a 1 s decay cut the peak RSS of a 10M-row
# day by ~0.2 GiB at no measured cost in time (docs/performance.md, session 6). An operator's
# own JE_MALLOC_CONF wins.
EMBEDDED_MALLOC_CONF = "percpu_arena:disabled,narenas:1,dirty_decay_ms:1000"


def configure_embedded_allocator() -> bool:
    """Give the embedded engine the run-sized allocator settings unless the environment has
    its own; false when the engine is already loaded in this process (too late to apply)."""
    if "chdb" in sys.modules:
        return False
    os.environ.setdefault("JE_MALLOC_CONF", EMBEDDED_MALLOC_CONF)
    return True


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_path(dsn: str) -> Path:
    """`chdb:///abs/path` -> /abs/path (also accepts `chdb://rel/path` and `chdb:path`)."""
    raw = dsn[len("chdb:") :]
    raw = raw[2:] if raw.startswith("//") else raw
    if not raw:
        raise WarehouseError("an embedded DSN needs a path: chdb:///path/to/data")
    return Path(raw).expanduser().resolve()


@dataclass
class _EngineLock:
    """An exclusive flock on `<data>.lock`, held while this process uses the engine.

    flock conflicts between two descriptors of the same process, so holders inside one process
    share the lock through a reference count (`_held`); only other processes wait.
    """

    path: Path
    handle: Any = None

    _held: ClassVar[dict[Path, tuple[Any, int]]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def acquire(self, timeout_seconds: float) -> None:
        with self._guard:
            if self.path in self._held:
                handle, count = self._held[self.path]
                self._held[self.path] = (handle, count + 1)
                self.handle = handle
                return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # kept open while the lock is held
        if not flock_within(handle, timeout_seconds):
            holder = self.path.read_text().strip() or "unknown"
            handle.close()
            raise EmbeddedEngineBusy(
                f"the embedded ClickHouse engine at {self.path.with_suffix('')} is held "
                f"by another process ({holder}); waited {timeout_seconds:.0f}s. Only one "
                "process may use an embedded engine at a time: wait for the other run, "
                "or point USAGE_ETL_CLICKHOUSE_DSN at a ClickHouse server."
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        with self._guard:
            self._held[self.path] = (handle, 1)
        self.handle = handle

    def release(self) -> None:
        if self.handle is None:
            return
        with self._guard:
            handle, count = self._held.pop(self.path)
            if count > 1:
                self._held[self.path] = (handle, count - 1)
            else:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                handle.close()
        self.handle = None


@dataclass(frozen=True)
class ConnectOptions:
    """Bounds of every wait on ClickHouse and of ClickHouse's own waits on S3 (settings.py).

    `connect`/`receive` bound a server's HTTP connection (clickhouse-connect's connect_timeout
    and send_receive_timeout; the server sends progress headers more often than `receive`, so
    a long query is not cut). `s3_settings` go with every query, so ClickHouse's s3() reads
    (usage/native.py) stop waiting on a stalled endpoint too."""

    connect: int = 5
    receive: int = 30
    s3_connect_ms: int = 5000
    s3_request_ms: int = 10000
    s3_read_retries: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectOptions:
        return cls(
            connect=settings.clickhouse_connect_timeout_seconds,
            receive=settings.clickhouse_receive_timeout_seconds,
            s3_connect_ms=int(settings.s3_connect_timeout_seconds * 1000),
            s3_request_ms=int(settings.s3_read_timeout_seconds * 1000),
            s3_read_retries=max(settings.s3_max_attempts - 1, 0),
        )

    @classmethod
    def from_env(cls) -> ConnectOptions:
        try:
            return cls.from_settings(Settings())
        except SettingsError:  # the caller validated what it needs; the defaults bound waits
            return cls()

    def query_settings(self) -> dict[str, Any]:
        return {
            "s3_connect_timeout_ms": self.s3_connect_ms,
            "s3_request_timeout_ms": self.s3_request_ms,
            "s3_max_single_read_retries": self.s3_read_retries,
            # The first attempts use shorter timeouts than s3_request_timeout_ms when adaptive:
            # the bound an operator sets is the one that holds.
            "s3_use_adaptive_timeouts": 0,
        }


@dataclass
class Warehouse:
    """A connected ClickHouse client plus the database every table lives in."""

    dsn: str
    database: str
    client: Client
    _lock: _EngineLock | None = field(default=None, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _options: ConnectOptions | None = field(default=None, repr=False)

    @property
    def embedded(self) -> bool:
        return is_embedded(self.dsn)

    @property
    def safe_dsn(self) -> str:
        return redact_url(self.dsn)

    # -- queries -------------------------------------------------------------------------------
    # Every call takes values through `parameters` ({name:Type} placeholders); the SQL text only
    # ever contains identifiers we validated (database, table names), never data.

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None, **settings: Any):
        return self._call(
            self.client.command, sql, parameters=parameters, settings=settings or None
        )

    def query_rows(
        self, sql: str, parameters: Mapping[str, Any] | None = None, **settings: Any
    ) -> list[tuple]:
        result = self._call(
            self.client.query, sql, parameters=parameters, settings=settings or None
        )
        return list(result.result_rows)

    def query_dicts(
        self, sql: str, parameters: Mapping[str, Any] | None = None, **settings: Any
    ) -> list[dict[str, Any]]:
        result = self._call(
            self.client.query, sql, parameters=parameters, settings=settings or None
        )
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def query_one(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        rows = self.query_rows(sql, parameters)
        return rows[0][0] if rows else None

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        return self._call(self.client.query_arrow, sql, parameters=parameters)

    def insert_arrow(self, table: str, data: pa.Table, **settings: Any) -> None:
        if data.num_rows:
            self._call(
                self.client.insert_arrow,
                table,
                data,
                database=self.database,
                settings=settings or None,
            )

    def insert_rows(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        if rows:
            self._call(
                self.client.insert,
                table,
                rows,
                column_names=list(column_names),
                database=self.database,
            )

    def insert_json_rows(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        """Rows of Python values (str, int, date, timezone-aware datetime, None) sent as
        JSONEachRow in the INSERT's body; ClickHouse converts each value to its column's type
        (a string to an Enum, a big int to UInt128). Values never enter the SQL text.

        `insert_rows` goes through clickhouse-connect's row insert, which imports pandas (to
        ask whether the data is a DataFrame; so does pyarrow's `pa.array`): ~0.35 CPU-s, 1.5
        without bytecode, in every process that writes a ledger entry or a publication."""
        if not rows:
            return
        lines = [
            json.dumps(dict(zip(column_names, map(_json_value, row), strict=True)),
                       ensure_ascii=False)
            for row in rows
        ]  # fmt: skip
        body = ("\n".join(lines) + "\n").encode()
        self._call(
            self.client.raw_insert, self.table(table), list(column_names), body,
            fmt="JSONEachRow",
        )  # fmt: skip

    def table(self, name: str) -> str:
        """Fully qualified, quoted table name."""
        return f"`{self.database}`.`{name}`"

    def _call(self, fn, *args, **kwargs):
        with self._mutex:  # chDB handles are not safe to share across threads
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except WarehouseError:
                raise
            except Exception as exc:  # clickhouse-connect / chDB errors
                if self.embedded:
                    self._drain_leftover_stream()
                message = str(exc).replace(self.dsn, self.safe_dsn)
                raise WarehouseError(
                    f"ClickHouse ({self.safe_dsn}): {message}", transient=_is_transient(exc)
                ) from None
            finally:
                _log_if_slow(time.perf_counter() - started, args)

    def _drain_leftover_stream(self) -> None:
        """The embedded engine (chDB through clickhouse-connect) leaves what a query that failed
        mid-stream had not yet sent for the *next* query on the connection: that one then raises
        a StreamFailureError or, worse, returns the failed query's partial rows as its own (a
        footer query after a failed one returned the failed group's footers). One throwaway
        query takes the leftover, so every caller's next statement answers for itself."""
        for _ in range(2):
            try:
                if list(self.client.query("SELECT 1").result_rows) == [(1,)]:
                    return
            except Exception:  # the leftover stream, whatever it raises
                continue

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dsn: str,
        database: str,
        lock_timeout_seconds: float = 600.0,
        options: ConnectOptions | None = None,
    ) -> Warehouse:
        options = options or ConnectOptions.from_env()
        lock = None
        if is_embedded(dsn):
            path = embedded_path(dsn)
            lock = _EngineLock(path.with_name(path.name + ".lock"))
            lock.acquire(lock_timeout_seconds)
            path.parent.mkdir(parents=True, exist_ok=True)
            dsn = f"chdb://{path}"
            configure_embedded_allocator()
        try:
            if is_embedded(dsn):
                client = clickhouse_connect.get_client(dsn=dsn, settings=options.query_settings())
            else:
                client = clickhouse_connect.get_client(
                    dsn=dsn,
                    connect_timeout=options.connect,
                    send_receive_timeout=options.receive,
                    settings=options.query_settings(),
                )
        except Exception as exc:
            if lock:
                lock.release()
            message = " ".join(str(exc).replace(dsn, redact_url(dsn)).split())
            raise WarehouseError(
                f"cannot connect to ClickHouse at {redact_url(dsn)}: {message}",
                transient=not is_embedded(dsn) and _is_transient(exc),
            ) from None
        return cls(dsn=dsn, database=database, client=client, _lock=lock, _options=options)

    def sibling(self) -> Warehouse:
        """Another connection to the same engine or server, for work on another thread of this
        process (a Warehouse runs one call at a time). The embedded engine runs the two
        connections' statements side by side; its lock is this process's already, so the
        sibling shares it and never waits. Close it when the thread's work is done."""
        return Warehouse.open(self.dsn, self.database, options=self._options)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._lock:
                self._lock.release()


@contextmanager
def open_warehouse(
    dsn: str, database: str, lock_timeout_seconds: float = 600.0
) -> Iterator[Warehouse]:
    warehouse = Warehouse.open(dsn, database, lock_timeout_seconds)
    try:
        yield warehouse
    finally:
        warehouse.close()


def server_host(dsn: str) -> str:
    return urlsplit(dsn).hostname or "embedded"
