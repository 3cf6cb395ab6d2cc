"""The embedded engine (chDB): the single-writer guard and the allocator settings it loads with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from usage_etl.settings import Settings
from usage_etl.warehouse.client import EMBEDDED_MALLOC_CONF, EmbeddedEngineBusy, Warehouse

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not Settings().clickhouse_dsn.startswith("chdb:")
    and not os.environ.get("USAGE_ETL_CLICKHOUSE_DSN", "chdb:").startswith("chdb:"),
    reason="the single-writer guard applies to the embedded engine only",
)
def test_single_writer_guard_serializes_or_fails_clearly(tmp_path):
    """A second process never opens a held engine: it waits, then fails with a clear message.

    The holder writes a marker row and keeps the engine; the contender (this process) gives up
    after its bounded wait with EmbeddedEngineBusy. Once the holder exits, the contender gets
    the engine and sees exactly the holder's data (nothing corrupted, nothing lost).
    """
    dsn = f"chdb://{tmp_path / 'engine'}"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from usage_etl.warehouse.client import Warehouse
                wh = Warehouse.open({dsn!r}, "usage")
                wh.command("CREATE DATABASE IF NOT EXISTS usage")
                wh.command("CREATE TABLE usage.marker (x UInt8) ENGINE = MergeTree ORDER BY x")
                wh.command("INSERT INTO usage.marker VALUES (1)")
                print("holding", flush=True)
                sys.stdin.readline()
                wh.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(EmbeddedEngineBusy, match="held by another process"):
            Warehouse.open(dsn, "usage", lock_timeout_seconds=1)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        wh = Warehouse.open(dsn, "usage", lock_timeout_seconds=30)
        try:
            assert wh.query_one("SELECT sum(x) FROM usage.marker") == 1
        finally:
            wh.close()
    finally:
        if holder.poll() is None:
            holder.kill()


@pytest.mark.parametrize("operator_conf", [None, "dirty_decay_ms:2000"])
def test_embedded_engine_loads_with_run_sized_allocator_settings(tmp_path, operator_conf):
    """chDB's allocator reads JE_MALLOC_CONF once, when the library loads: opening the embedded
    engine sets the run-sized default before that, and leaves an operator's own value alone."""
    env = {k: v for k, v in os.environ.items() if k != "JE_MALLOC_CONF"}
    if operator_conf:
        env["JE_MALLOC_CONF"] = operator_conf
    script = f"""
        import os, sys
        from usage_etl.warehouse.client import Warehouse
        loaded_before = "chdb" in sys.modules
        wh = Warehouse.open({f"chdb://{tmp_path / 'engine'}"!r}, "usage")
        assert wh.query_one("SELECT 1") == 1
        print(loaded_before, "chdb" in sys.modules, os.environ.get("JE_MALLOC_CONF"))
        wh.close()
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["False", "True", operator_conf or EMBEDDED_MALLOC_CONF]
