"""A real Dagster deployment for end-to-end tests: webserver + daemon on a PostgreSQL instance.

The processes get the production instance file (dagster_home/dagster.postgres.yaml) and the
pipeline settings through the environment, exactly as an operator runs them. Readiness is
polled over HTTP; every process started here is stopped (with its children) in `stop()`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from usage_etl.local_stack import free_port
from usage_etl.settings import REPO_ROOT, Settings
from usage_etl.warehouse.client import Warehouse

LOCATION = "usage_etl.definitions"
WAREHOUSE_POOL = "warehouse"
BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    pass


@dataclass
class DagsterStack:
    home: Path
    env: dict[str, str]
    port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # `python -m <these>` then the daemon's arguments (benchmarks wrap the entry point).
    daemon_module: tuple[str, ...] = ("usage_etl.daemon",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        # Webserver first: it creates the PostgreSQL schema before the daemon polls it.
        self._spawn("webserver", ["dagster-webserver", "-m", LOCATION, "-h", "127.0.0.1",
                                  "-p", str(self.port)])  # fmt: skip
        self.wait_for(self._location_loaded, timeout, "the webserver and its code location")
        set_pool_limit(self.env, WAREHOUSE_POOL, 1)
        # The project's daemon entry point (scripts/dagster_prod.sh's): the backfill loop every 2 s.
        self._spawn("daemon", ["python", "-m", *self.daemon_module, "run", "-m", LOCATION])
        self.wait_for(self._daemons_healthy, timeout, "the daemon's heartbeats")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.home / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in self.processes:
            path = self.home / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def wait_for(self, ready, timeout: float, what: str, interval: float = 0.5):
        """Poll `ready()` until it returns something truthy; fail with the logs otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise StackError(f"{name} exited ({process.returncode})\n{self.log_tail()}")
            value = ready()
            if value:
                return value
            time.sleep(interval)
        raise StackError(f"{what} not ready within {timeout:.0f}s\n{self.log_tail()}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise StackError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def _location_loaded(self) -> bool:
        try:
            data = self.graphql(LOCATIONS)
        except (urllib.error.URLError, ConnectionError, StackError):
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        for entry in entries:
            if entry["locationOrLoadError"]["__typename"] == "PythonError":
                raise StackError(f"code location failed: {entry['locationOrLoadError']}")
        return any(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)

    def _daemons_healthy(self) -> bool:
        """The webserver sees heartbeats from the daemons a backfill needs."""
        statuses = self.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {d["daemonType"] for d in statuses if d["healthy"]}
        return {"BACKFILL", "QUEUED_RUN_COORDINATOR", "SENSOR", "SCHEDULER"} <= healthy

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            _stop_tree(process)
        self.processes.clear()


def set_pool_limit(env: dict[str, str], pool: str, limit: int) -> None:
    """Store the pool's limit in the instance before the first run is queued, as
    scripts/dagster_prod.sh does: a limit that only comes from `default_limit` is created by
    the queue daemon on the iteration that first sees the pool, too late to hold that one."""
    subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", pool, str(limit)],
        cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


DAEMONS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }
"""

LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def _stop_tree(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process and every descendant it spawned (code servers, run workers)."""
    if process.poll() is not None:
        return
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=timeout)


def start_stack(
    workdir: Path, env_overrides: dict[str, str], daemon_module: tuple[str, ...] | None = None
) -> DagsterStack:
    """DAGSTER_HOME under `workdir` with the production (PostgreSQL) instance file;
    `daemon_module` replaces `usage_etl.daemon` in the daemon's `python -m` command line."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.postgres.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_ETL_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", **env_overrides})
    stack = DagsterStack(home, env, free_port())
    if daemon_module:
        stack.daemon_module = daemon_module
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def stack_settings(stack: DagsterStack) -> Settings:
    return Settings(
        clickhouse_dsn=stack.env["USAGE_ETL_CLICKHOUSE_DSN"],
        database=stack.env["USAGE_ETL_DATABASE"],
        landing_url=stack.env["USAGE_ETL_LANDING_URL"],
    )


@contextmanager
def stack_warehouse(stack: DagsterStack) -> Iterator[Warehouse]:
    """The deployment's warehouse, opened only while no run needs it."""
    settings = stack_settings(stack)
    warehouse = Warehouse.open(settings.clickhouse_dsn, settings.database, 120)
    try:
        yield warehouse
    finally:
        warehouse.close()
