"""The production instance's event log (dagster_home/dagster.postgres.yaml, `event_log_storage`):
dagster-postgres' `PostgresEventLogStorage`, same tables and statements, with one connection
kept open per process instead of a new one per statement.

Dagster's PostgreSQL event log uses SQLAlchemy's `NullPool` ("to prevent accumulating
connections per DagsterInstance"): every read and write of the event log opens a connection,
authenticates (SCRAM-SHA-256 by default: a key derivation on both sides) and closes it again.
Storing one event opens ~2.2 connections (the event row, then the asset index, the check index,
the asset-event tags, each on its own). A backfill's range run of 10 demo days stored 180 events
through 396 such connections: ~6 s of its wall time (docs/performance.md, "Session 11").

Here the engine keeps one connection (`pool_size=1`, what Dagster's own webserver does in
`optimize_for_webserver`); a second thread asking at the same time gets an extra connection
that is closed when it is returned (`max_overflow=-1`: never blocks). Every statement still
autocommits as before (a stored event is committed when `store_event` returns; PostgreSQL's
durability settings are untouched). A connection idle for more than `PING_IDLE_SECONDS` is
checked with a ping before use (a restarted server or a dropped connection then costs a
reconnect, not a failed write); one in use by a run writing its events back to back is not
(SQLAlchemy's `pool_pre_ping` would add a round trip to each of them: ~370 per 10 demo days).
Connections are recycled after `POOL_RECYCLE_SECONDS` and never shared with a forked child.
The webserver keeps Dagster's own tuning (it replaces the engine in `optimize_for_webserver`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from dagster_postgres.event_log import PostgresEventLogStorage
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


class KeptOpenPostgresEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log with one kept-open connection per process."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: Any = None,
        token_provider: Any = None,
    ):
        self._pid = os.getpid()  # Dagster's __init__ already connects (to create the tables)
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
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

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Self:  # type: ignore[override]
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    @contextmanager
    def _connect(self) -> Iterator[Connection]:  # type: ignore[override]
        if self._pid != os.getpid():
            # A forked child never uses its parent's socket: forget (not close) the pool.
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        with super()._connect() as conn:
            yield conn

    def dispose(self) -> None:
        super().dispose()
        if self._pid == os.getpid():
            self._engine.dispose()
