"""The Dagster instance in DAGSTER_HOME: set up once, before any run, and checked by the doctor.

A SQLite instance creates its tables the first time a process opens it. Two processes that open
a brand-new DAGSTER_HOME at the same moment both create them: one fails with "table runs already
exists", or both stamp an Alembic revision and the database ends up with two heads, after which
every run fails. `prepare_instance()` opens the instance once, under a file lock in DAGSTER_HOME,
and runs its storage upgrade (`dagster instance migrate`); scripts/setup.sh, the demo, the dev
server and the `usage-etl` commands call it before anything starts a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from usage_etl.locks import flock_within
from usage_etl.settings import dagster_home

LOCK_NAME = ".usage_etl_instance.lock"
STAMP_NAME = ".usage_etl_instance"
# The SQLite databases of a default instance (base_dir = DAGSTER_HOME) and a table each must have.
SQLITE_DATABASES = {
    "history/runs.db": "runs",
    "history/runs/index.db": "event_logs",
    "schedules/schedules.db": "jobs",
}


def _dagster_version() -> str:
    from dagster.version import __version__

    return __version__


@contextmanager
def _home_lock(home: Path, timeout: float) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_NAME, "a+") as handle:
        if not flock_within(handle, timeout):
            raise TimeoutError(
                f"another process is setting up the Dagster instance in {home} "
                f"(waited {timeout:.0f}s)"
            )
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _uses_sqlite(home: Path) -> bool:
    config = home / "dagster.yaml"
    if not config.exists():
        return True
    import yaml

    data = yaml.safe_load(config.read_text()) or {}
    if (data.get("event_log_storage") or {}).get("module") == "usage_etl.instance_storage":
        # Dagster's SQLite event log (connections kept open), default SQLite runs and schedules
        return not any(key in data for key in ("storage", "run_storage", "schedule_storage"))
    return not any(key in data for key in ("storage", "run_storage", "event_log_storage"))


def is_prepared(home: Path | None = None) -> bool:
    home = home or dagster_home()
    stamp = home / STAMP_NAME
    return stamp.exists() and stamp.read_text().strip() == _dagster_version()


def prepare_instance(home: Path | None = None, timeout: float = 120.0) -> bool:
    """Create and migrate the instance's storage once; true when this call did the work.

    Cheap when done (one small file read). The lock makes a second process wait for the first
    to finish instead of creating the same tables at the same time."""
    home = (home or dagster_home()).resolve()
    if is_prepared(home):
        return False
    with _home_lock(home, timeout):
        if is_prepared(home):
            return False
        import dagster as dg

        # Dagster's storage migrations print progress on stdout; the caller's output is its own.
        with contextlib.redirect_stdout(io.StringIO()):
            with dg.DagsterInstance.from_config(str(home)) as instance:
                instance.upgrade(print_fn=lambda *_: None)
        (home / STAMP_NAME).write_text(_dagster_version() + "\n")
    return True


@dataclass(frozen=True)
class InstanceProblem:
    database: str
    problem: str
    fix: str


def instance_problems(home: Path | None = None) -> list[InstanceProblem]:
    """What is wrong with a SQLite instance's storage (nothing for a non-SQLite instance)."""
    home = (home or dagster_home()).resolve()
    if not _uses_sqlite(home):
        return []
    problems = []
    for relative, table in SQLITE_DATABASES.items():
        path = home / relative
        if not path.exists():
            if relative.startswith("history/runs.db") or is_prepared(home):
                problems.append(
                    InstanceProblem(relative, "missing", "run `usage-etl doctor --repair-instance`")
                )
            continue
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
            heads = (
                [r[0] for r in connection.execute("SELECT version_num FROM alembic_version")]
                if "alembic_version" in tables
                else []
            )
        finally:
            connection.close()
        if table not in tables:
            problems.append(
                InstanceProblem(
                    relative,
                    f"table {table} is missing",
                    "stop every Dagster process, then `usage-etl doctor --repair-instance`",
                )
            )
        if len(heads) > 1:
            problems.append(
                InstanceProblem(
                    relative,
                    f"{len(heads)} Alembic heads ({', '.join(sorted(heads))}): two processes "
                    "set the instance up at once",
                    "stop every Dagster process, then `usage-etl doctor --repair-instance`",
                )
            )
    return problems


def repair_instance(home: Path | None = None, timeout: float = 120.0) -> list[str]:
    """Keep one Alembic head per database (the newest the installed Dagster knows), then
    create what is missing and migrate. Run it with no Dagster process running."""
    from alembic.script import ScriptDirectory

    home = (home or dagster_home()).resolve()
    done = []
    with _home_lock(home, timeout):
        for relative in SQLITE_DATABASES:
            path = home / relative
            if not path.exists():
                continue
            connection = sqlite3.connect(path, timeout=30)
            try:
                tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
                if "alembic_version" not in tables:
                    continue
                rows = connection.execute("SELECT version_num FROM alembic_version")
                heads = [r[0] for r in rows]
                if len(heads) <= 1:
                    continue
                script = ScriptDirectory.from_config(_alembic_config(relative))
                keep = max(heads, key=lambda rev: _depth(script, rev))
                connection.execute("DELETE FROM alembic_version WHERE version_num != ?", (keep,))
                connection.commit()
                done.append(f"{relative}: kept Alembic head {keep}, dropped {len(heads) - 1}")
            finally:
                connection.close()
        (home / STAMP_NAME).unlink(missing_ok=True)
    prepare_instance(home, timeout)
    return done


def _alembic_config(relative: str):
    from dagster._core.storage.sql import get_alembic_config

    if relative.startswith("history/runs/"):
        from dagster._core.storage.event_log.sqlite import sqlite_event_log as module
    elif relative.startswith("schedules/"):
        from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage as module
    else:
        from dagster._core.storage.runs.sqlite import sqlite_run_storage as module
    return get_alembic_config(module.__file__)


def _depth(script, revision: str) -> int:
    """How far a revision is from the base (an unknown one counts as the oldest)."""
    try:
        return sum(1 for _ in script.iterate_revisions(revision, "base"))
    except Exception:
        return -1
