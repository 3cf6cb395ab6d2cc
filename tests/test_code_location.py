"""Loading the code location: no warehouse connection, and no polars for the native path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


def test_code_location_loads_without_touching_the_warehouse(tmp_path, monkeypatch):
    """Definitions load even when the DSN points nowhere: nothing connects at load time."""
    monkeypatch.setenv("USAGE_ETL_CLICKHOUSE_DSN", "http://nobody:secret@127.0.0.1:1")
    from usage_etl.definitions import defs

    definitions = defs()
    assert {"daily_usage", "monthly_invoices"} <= {
        job.name for job in definitions.resolve_all_job_defs()
    }


def _after_load(prelude: str) -> str:
    script = f"""
        import gc
        {prelude}
        from usage_etl.definitions import defs
        defs()
        print(gc.isenabled(), gc.get_freeze_count() > 100_000)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_loading_freezes_what_it_loaded_and_leaves_the_collector_as_it_was():
    """The load pauses the cyclic collector and freezes the loaded objects (docs/performance.md,
    session 13); a long-lived process (webserver, daemon) must get its collector back, and one
    that switched it off keeps it off."""
    assert _after_load("") == "True True"
    assert _after_load("gc.disable()") == "False True"


def _contents(definitions) -> dict:
    repository = definitions.get_repository_def()
    graph = repository.asset_graph
    return {
        "jobs": sorted(job.name for job in repository.get_all_jobs()),
        "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
        "checks": sorted(str(key) for key in graph.asset_check_keys),
        "schedules": sorted(s.name for s in repository.schedule_defs),
        "sensors": sorted(s.name for s in repository.sensor_defs),
        "resources": sorted(repository.get_top_level_resources()),
        "catalog": "plugin_component_types_json" in (definitions.metadata or {}),
        "tree": definitions.component_tree is not None,
    }


def test_a_run_loads_everything_a_code_server_does_but_the_ui_catalog():
    """A run's load (none set, or Dagster's RECONSTRUCTION in a run worker) skips only the
    catalog of installed component types the UI reads from a code server's load."""
    from dagster._core.definitions.definitions_load_context import (
        DefinitionsLoadContext,
        DefinitionsLoadType,
    )

    from usage_etl.definitions import _load

    def load_as(load_type):
        if load_type is None:
            return _contents(_load.__wrapped__())
        with DefinitionsLoadContext.scoped(DefinitionsLoadContext(load_type=load_type)):
            return _contents(_load.__wrapped__())

    code_server = load_as(DefinitionsLoadType.INITIALIZATION)
    assert code_server["catalog"] and code_server["tree"]
    assert "daily_usage" in code_server["jobs"] and code_server["checks"]
    for run in (load_as(None), load_as(DefinitionsLoadType.RECONSTRUCTION)):
        assert run == {**code_server, "catalog": False}
