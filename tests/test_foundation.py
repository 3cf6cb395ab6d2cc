"""Foundation: migrations, the embedded single-writer guard, settings, both instance kinds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import dagster as dg
import pytest

from usage_etl.settings import Settings, redact_url
from usage_etl.warehouse.client import (
    EMBEDDED_MALLOC_CONF,
    EmbeddedEngineBusy,
    Warehouse,
    WarehouseError,
)
from usage_etl.warehouse.migrations import (
    DdlOptions,
    applied_versions,
    apply_migrations,
    discover,
    render,
)

REPO = Path(__file__).resolve().parents[1]


def test_migrations_apply_in_order_once(warehouse, settings):
    versions = [m.version for m in discover()]
    assert versions == sorted(versions) and versions[0] == "001"
    assert set(applied_versions(warehouse, settings.database)) == set(versions)
    # Re-applying is a no-op and changes nothing.
    assert apply_migrations(warehouse, DdlOptions.from_settings(settings)) == []
    tables = {
        r[0]
        for r in warehouse.query_rows(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            {"db": settings.database},
        )
    }
    assert {"cache_events", "usage_daily", "usage_hourly", "ingest_objects"} <= tables


def test_existing_cache_events_table_is_left_alone(usage_env, settings):
    """The application owns cache_events: a pre-existing table (other ORDER BY) is kept."""
    wh = Warehouse.open(settings.clickhouse_dsn, settings.database)
    try:
        wh.command(f"CREATE DATABASE IF NOT EXISTS `{settings.database}`")
        wh.command(
            f"CREATE TABLE {wh.table('cache_events')} (event_id String, occurred_at "
            "DateTime64(3, 'UTC'), account_id String, project_id String, artifact_kind "
            "LowCardinality(String), action Enum8('upload' = 1, 'download' = 2), size_bytes "
            "UInt64, app_only_column UInt8 DEFAULT 7) ENGINE = MergeTree ORDER BY event_id"
        )
        apply_migrations(wh, DdlOptions.from_settings(settings))
        columns = [r[0] for r in wh.query_rows(f"DESCRIBE TABLE {wh.table('cache_events')}")]
        assert "app_only_column" in columns
    finally:
        wh.close()


def test_edited_migration_is_refused(warehouse, settings):
    warehouse.command(
        f"ALTER TABLE {warehouse.table('schema_migrations')} UPDATE checksum = 'x' "
        "WHERE version = '001'",
        mutations_sync=1,
    )
    with pytest.raises(WarehouseError, match="changed after it was applied"):
        apply_migrations(warehouse, DdlOptions.from_settings(settings))


def test_cluster_ddl_is_rendered_with_on_cluster_and_replicated_engines():
    options = DdlOptions(database="usage", cluster="billing", replicated=True)
    statements = [s for m in discover() for s in render(m, options)]
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    assert creates and all("ON CLUSTER `billing`" in s for s in creates)
    assert all("ENGINE = ReplicatedMergeTree" in s for s in creates)
    plain = [s for m in discover() for s in render(m, DdlOptions(database="usage"))]
    assert not any("ON CLUSTER" in s or "Replicated" in s for s in plain)


def test_settings_reject_unsafe_identifiers(monkeypatch):
    monkeypatch.setenv("USAGE_ETL_DATABASE", "usage; DROP TABLE x")
    with pytest.raises(ValueError, match="identifier"):
        Settings()


def test_redaction_hides_passwords():
    assert redact_url("https://finance:s3cr3t@ch.example:8443/db") == (
        "https://finance:***@ch.example:8443/db"
    )
    assert (
        "s3cr3t"
        not in Settings(clickhouse_dsn="http://u:s3cr3t@h:8123").describe()["clickhouse_dsn"]
    )


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


def test_a_run_loads_polars_only_for_files_the_python_readers_take():
    """polars (~40 MiB resident) is the Python readers' library: loading the definitions and
    the modules of the native path must not import it (docs/performance.md, session 6)."""
    script = """
        import sys
        from usage_etl.definitions import defs
        defs().resolve_job_def("daily_usage")
        import usage_etl.usage.load, usage_etl.usage.publish, usage_etl.usage.audit
        print(sorted(m for m in sys.modules if m.split(".")[0] == "polars")[:3])
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_background_merges_leave_a_days_bulk_load_alone(warehouse, settings):
    """sql/006: rollup_rows merges in the background only parts adding up to 16 MiB or less
    (late files), never the ~15 MiB parts of a day's bulk load, which its readers take as they
    are. (`OPTIMIZE ... PARTITION` still compacts a day on demand.)"""
    engine = warehouse.query_one(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": settings.database, "t": "rollup_rows"},
    )
    assert "max_bytes_to_merge_at_max_space_in_pool = 16777216" in engine
    # sql/007: those parts are Compact (one file), a merged day is Wide.
    assert "min_bytes_for_wide_part = 67108864" in engine


def test_code_location_loads_without_touching_the_warehouse(tmp_path, monkeypatch):
    """Definitions load even when the DSN points nowhere: nothing connects at load time."""
    monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", "http://nobody:secret@127.0.0.1:1")
    from usage_etl.definitions import defs

    definitions = defs()
    assert {"daily_usage", "monthly_invoices"} <= {
        job.name for job in definitions.resolve_all_job_defs()
    }


def test_partitioned_job_runs_on_a_postgres_instance(postgres_server, usage_env, tmp_path):
    """The production instance kind: dagster-postgres storage against a real server."""
    home = Path(usage_env["DAGSTER_HOME"])
    home.joinpath("dagster.yaml").write_text(
        (REPO / "dagster_home" / "dagster.postgres.yaml").read_text()
    )
    env = {**os.environ, **postgres_server.env()}
    marker = uuid.uuid4().hex  # the session's PostgreSQL is shared with other tests
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "job",
            "execute",
            "-m",
            "usage_etl.definitions",
            "-j",
            "daily_usage",
            "--tags",
            json.dumps({"dagster/partition": "2026-10-05", "test/run": marker}),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    os.environ.update(postgres_server.env())
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            runs = instance.get_runs(
                filters=dg.RunsFilter(job_name="daily_usage", tags={"test/run": marker})
            )
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    finally:
        for key in postgres_server.env():
            os.environ.pop(key, None)
