"""The development instance's event log (dagster_home/dagster.yaml, `event_log_storage`):
Dagster's run-sharded SQLite event log, same files (history/runs/ under the instance's folder) and
schema, with its connections kept open. Runs and schedules stay Dagster's default SQLite storages.

Dagster's `SqliteEventLogStorage` opens a new SQLAlchemy engine and SQLite connection for every
read and write of the event log and closes it again. Closing the last connection of a WAL
database checkpoints it and deletes the WAL file, and the next connection creates it again
(with an fsync of the directory): an empty day's `daily_usage` run made ~115 such connections
and ~490 fdatasync calls, most of them for this. Here each process keeps one connection per
shard (the index and the last few runs' databases), so a write is a commit as before
(SQLite's default synchronous=FULL in WAL mode: a committed event survives a power loss, as it
did) without the checkpoint and WAL re-creation around it.

The webserver follows a live run by watching the run's database file (watchdog): with the
connection kept open, a write no longer rewrites that file (the WAL does not touch it), so after
each transaction that changed a run's database its file's mtime is set, which is the change the
watcher reacts to. The connections close (checkpointing) when a shard leaves the small cache,
when the instance is disposed and at process exit; a killed process leaves a WAL that the next
connection recovers, as with any SQLite database.

A shard's first use in a process is Dagster's `_initdb`: it creates a new shard's tables and
stamps its Alembic revision, or checks an existing shard's revision, loading Alembic's revision
map (~90 migration scripts executed) each time: ~0.1 s for a run's new shard, ~0.05 s more
for the index, every run. Here Dagster's own `_initdb` makes one template shard per Dagster
version (`.shard-template-dagster-<version>.sqlite` beside the shards); a new shard is a copy
of it, and an existing shard stamped with its revision needs nothing more. Paired runs of an
empty day: ~0.5 CPU-s less per run (docs/performance.md, session 16).

Production uses PostgreSQL (dagster_home/dagster.postgres.yaml, deploy/dagster.yaml): not this.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

from dagster._config import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import _event_logs_directory
from dagster.version import __version__ as DAGSTER_VERSION
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool

# Shards whose connection a process keeps: the index and the runs it is writing or reading
# (a run worker: its own run; the webserver: the runs someone is looking at).
OPEN_SHARDS = 4

log = logging.getLogger(__name__)

_open_storages: weakref.WeakSet[OpenShardsSqliteEventLogStorage] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Bounded: a daemon thread (a watcher) may hold the lock at exit; then the WAL stays and
    # the next connection recovers it, as after a kill.
    for storage in list(_open_storages):
        storage.close_connections(wait_seconds=5.0)


def _new_shard_in_wal_mode(path: str) -> None:
    """Create a shard's database file in WAL mode before Dagster creates its schema. Dagster
    creates the tables and indexes first, each statement its own commit in rollback-journal
    mode (the journal, the database and the directory fsynced every time: ~60 fsyncs for a
    run's new shard), and switches to WAL after. In WAL mode each commit fsyncs only the WAL,
    as durable at synchronous=FULL (docs/performance.md, session 11). An existing file is left
    as it is; if another process holds the new file, Dagster's own setup proceeds as before."""
    if os.path.exists(path):
        return
    try:
        with contextlib.closing(
            sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
        ) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


def _set_up_by_dagster(path: str, initdb: Callable[[Engine], None]) -> None:
    """Dagster's own first-use setup (`initdb`: create the tables and stamp them, or check the
    revision) of the shard file at `path`, created in WAL mode first if new, on a throwaway
    engine as Dagster does it."""
    _new_shard_in_wal_mode(path)
    setup = create_engine(
        f"sqlite:///{path}",
        poolclass=NullPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
    )
    try:
        initdb(setup)
    finally:
        setup.dispose()


def _alembic_revision(engine: Engine) -> tuple[str, ...]:
    """The revision(s) a shard is stamped with (empty: none, or no such table)."""
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except SQLAlchemyError:
        return ()
    return tuple(sorted(row[0] for row in rows))


def _template_at_head(path: str, initdb: Callable[[Engine], None]) -> tuple[str, ...]:
    """The revision of the template shard at `path`, made first if missing: an empty run
    shard, created in WAL mode and stamped at Dagster's head by Dagster's own `initdb`, then
    moved into place whole (two processes making it at once each make a complete one)."""
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            _set_up_by_dagster(partial, initdb)  # disposed: checkpointed, no WAL left
            _fsync(partial)
            os.replace(partial, path)
        except (OSError, sqlite3.Error, SQLAlchemyError) as exc:
            log.warning("no event log shard template (%s): shards are set up one by one", exc)
            return ()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
    template = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        revision = _alembic_revision(template)
    finally:
        template.dispose()
    if not revision:
        log.warning("unreadable event log shard template %s: shards are set up one by one", path)
    return revision


def _copy_new(template: str, path: str) -> bool:
    """A new shard at `path` as a copy of the template, durable before it appears (fsynced,
    then hard-linked: a shard another process created meanwhile is never replaced). False
    when it could not be made; the caller then takes Dagster's own path."""
    partial = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        shutil.copyfile(template, partial)
        _fsync(partial)
        os.link(partial, path)
        _fsync(os.path.dirname(path))
    except OSError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    return True


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OpenShardsSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log, one kept-open connection per recent shard."""

    def __init__(self, base_dir: str | None = None, inst_data: Any = None):
        # Set before Dagster's __init__, which already connects when it creates the index.
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._head: tuple[str, ...] | None = None  # the template's revision, once read
        self._pid = os.getpid()
        self._pending_inst_data = inst_data
        if base_dir is not None:
            super().__init__(base_dir, inst_data=inst_data)
        _open_storages.add(self)

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Self:  # type: ignore[override]
        return cls(base_dir=config_value.get("base_dir"), inst_data=inst_data)

    def register_instance(self, instance: Any) -> None:
        # Without a base_dir the event log lives where Dagster's default puts it: under the
        # instance's own directory (DAGSTER_HOME, or the folder an instance was opened from),
        # known only now.
        if not hasattr(self, "_base_dir"):
            super().__init__(
                _event_logs_directory(instance.root_directory),
                inst_data=self._pending_inst_data,
            )
        super().register_instance(instance)

    def _engine(self, shard: str) -> Engine:
        if self._pid != os.getpid():  # a forked child never uses its parent's connections
            self._engines = OrderedDict()
            self._pid = os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=StaticPool,  # one connection, serialised by self._db_lock
                connect_args={
                    "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                    "check_same_thread": False,
                },
            )  # connects on first use
            if shard not in self._initialized_dbs:
                self._prepare_shard(shard, engine)
                self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > OPEN_SHARDS:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    def _prepare_shard(self, shard: str, engine: Engine) -> None:
        """A shard's first use in this process: what Dagster's `_initdb` does (create the shard,
        or check its Alembic revision), without loading Alembic's revision map when the
        template tells the answer. A new shard is a copy of the template; an existing one at
        the template's revision is ready. Anything else takes Dagster's own path."""
        path = self.path_for_shard(shard)
        head = self._template_revision()
        if head:
            if not os.path.exists(path) and _copy_new(self._template_path(), path):
                return
            if os.path.exists(path) and _alembic_revision(engine) == head:
                return
        _set_up_by_dagster(path, self._initdb)

    def _template_path(self) -> str:
        # Not `*.db`: Dagster lists and wipes the run shards by that pattern.
        return os.path.join(self._base_dir, f".shard-template-dagster-{DAGSTER_VERSION}.sqlite")

    def _template_revision(self) -> tuple[str, ...]:
        """The Alembic revision of this Dagster's template shard (made on first need); empty
        when there is no usable template (then every shard takes Dagster's own path)."""
        if self._head is None:
            self._head = _template_at_head(self._template_path(), self._initdb)
        return self._head

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                changes = raw.total_changes  # type: ignore[union-attr]
                with conn.begin():
                    yield conn
                changed = raw.total_changes != changes  # type: ignore[union-attr]
            if changed and shard != INDEX_SHARD_NAME:
                # What a checkpoint on close did before: tell the run's watchers.
                os.utime(self.path_for_shard(shard))

    def close_connections(self, wait_seconds: float = -1) -> None:
        if not self._db_lock.acquire(timeout=wait_seconds):
            return
        try:
            engines, self._engines = self._engines, OrderedDict()
            if self._pid == os.getpid():
                for engine in engines.values():
                    engine.dispose()
        finally:
            self._db_lock.release()

    def dispose(self) -> None:
        self.close_connections()
        super().dispose()

    def wipe(self) -> None:
        self.close_connections()  # it deletes the shard files
        super().wipe()

    def upgrade(self) -> None:
        self.close_connections()
        super().upgrade()
