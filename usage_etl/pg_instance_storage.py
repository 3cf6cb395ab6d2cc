"""The production instance's storages (dagster_home/dagster.postgres.yaml): dagster-postgres'
event log, run and schedule storages, same tables and statements, each keeping its connections
open per process instead of opening a new one per statement.

Dagster's PostgreSQL event log uses SQLAlchemy's `NullPool` ("to prevent accumulating
connections per DagsterInstance"): every read and write of the event log opens a connection,
authenticates (SCRAM-SHA-256 by default: a key derivation on both sides) and closes it again.
Storing one event opens ~2.2 connections (the event row, then the asset index, the check index,
the asset-event tags, each on its own). A backfill's range run of 10 demo days stored 180 events
through 396 such connections: ~6 s of its wall time; stored alone, an event cost 53 ms of wall,
12 ms of the run's CPU and 22 ms of PostgreSQL's, and 6.1 / 2.7 / 1.2 ms with the connection
kept (`python -m bench.event_cost`, docs/performance.md "Session 11"). The run storage did the
same ~20 times per run, and the daemon's loops (run queue, backfills, monitoring) every tick.

Here each storage's engine keeps up to `POOL_SIZE` connections (Dagster's own webserver keeps
one in `optimize_for_webserver`; storing an event nests a second); more threads asking at the
same time get extra connections, closed when returned (`max_overflow=-1`: never blocks).
Every statement still autocommits as before (a stored event is committed when `store_event`
returns; PostgreSQL's durability settings are untouched). A connection idle for more than
`PING_IDLE_SECONDS` is checked with a ping before use (a restarted server or a dropped
connection then costs a reconnect, not a failed write); one in use by a run writing its events
back to back is not (SQLAlchemy's `pool_pre_ping` would add a round trip to each of them:
~370 per 10 demo days). Connections are recycled after `POOL_RECYCLE_SECONDS` and never shared
with a forked child. The webserver keeps Dagster's own tuning (it replaces the engines in
`optimize_for_webserver`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError

POOL_RECYCLE_SECONDS = 3600
PING_IDLE_SECONDS = 2.0
POOL_SIZE = 2


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pessimistic disconnect handling (a `checkout` hook raising
    DisconnectionError makes the pool replace the connection), for idle connections only."""

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned")
        if returned is None or time.monotonic() - returned <= PING_IDLE_SECONDS:
            return  # a new connection, or one returned a moment ago
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as exc:
            raise DisconnectionError(f"idle event log connection is gone: {exc}") from exc


class _KeptOpen:
    """What the three storages share: the kept-open engine, replacing Dagster's NullPool one
    right after Dagster's __init__ (which already connected once, to create the tables)."""

    _engine: Engine
    postgres_url: str
    _token_provider: Any

    def _keep_connections_open(self) -> None:
        self._engine.dispose()  # Dagster's NullPool engine (nothing pooled to close)
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=POOL_SIZE,
            max_overflow=-1,
            pool_recycle=POOL_RECYCLE_SECONDS,
        )
        _ping_when_idle(self._engine)
        self._pid = os.getpid()

    def _in_this_process(self) -> None:
        if getattr(self, "_pid", os.getpid()) != os.getpid():
            # A forked child never uses its parent's socket: forget (not close) the pool.
            self._engine.dispose(close=False)
            self._pid = os.getpid()

    def _close_connections(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Self:
        return cls(  # type: ignore[call-arg]
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class KeptOpenPostgresEventLogStorage(_KeptOpen, PostgresEventLogStorage):
    """dagster-postgres' event log with its connections kept open per process."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: Any = None, token_provider: Any = None):  # fmt: skip
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._keep_connections_open()

    @contextmanager
    def _connect(self) -> Iterator[Connection]:  # type: ignore[override]
        self._in_this_process()
        with super()._connect() as conn:
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._close_connections()


class KeptOpenPostgresRunStorage(_KeptOpen, PostgresRunStorage):
    """dagster-postgres' run storage with its connections kept open per process."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: Any = None, token_provider: Any = None):  # fmt: skip
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._keep_connections_open()

    @contextmanager
    def connect(self) -> Iterator[Connection]:  # type: ignore[override]
        self._in_this_process()
        with super().connect() as conn:
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._close_connections()


class KeptOpenPostgresScheduleStorage(_KeptOpen, PostgresScheduleStorage):
    """dagster-postgres' schedule storage with its connections kept open per process."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: Any = None, token_provider: Any = None):  # fmt: skip
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._keep_connections_open()

    @contextmanager
    def connect(self, run_id: str | None = None) -> Iterator[Connection]:  # type: ignore[override]
        self._in_this_process()
        with super().connect(run_id) as conn:
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._close_connections()
