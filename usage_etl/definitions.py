"""The code location `usage_etl.definitions`.

Everything under `usage_etl/defs/` is discovered: one folder per area (usage, invoices,
reconciliation, automation), one concern per module. Loading definitions never touches
ClickHouse or S3.
"""

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path

import dagster as dg
from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
)
from dagster._utils.warnings import suppress_dagster_warnings


def _one_load_context(set_by_dagster: DefinitionsLoadContext | None):
    """One Dagster load context for the whole folder load, when the caller set none.

    Without one (`dagster job execute -m`, `defs()` in a script or test), every
    `DefinitionsLoadContext.get()` of the component tree builds a new context, and each
    reads the instance's defs-state cursor from its run storage: 72 SQLite connections
    (~0.1-0.2 s) to load this code location. The webserver, daemon, code server and run
    worker set a context before loading; it is used as it is."""
    if set_by_dagster is not None:
        return nullcontext()
    return DefinitionsLoadContext.scoped(
        DefinitionsLoadContext(load_type=DefinitionsLoadType.INITIALIZATION)
    )


@contextmanager
def _collector_paused_then_frozen() -> Iterator[None]:
    """Load without Python's cyclic collector, then freeze what was loaded.

    Loading creates ~150k long-lived objects (Dagster's and this project's modules and
    definitions); while they pile up, the collector keeps re-scanning all of them, and every
    later full collection of the run would scan them again. Freezing moves them out of its
    generations for good (the ~4k cyclic leftovers of the load stay: ~0.1 s to collect, a
    few hundred KB to keep). ~0.2 s of an empty day's run (docs/performance.md)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()


@cache
@suppress_dagster_warnings  # as dg.load_from_defs_folder does
def _load() -> dg.Definitions:
    # Dagster asks for the definitions several times per process (the CLI, the reconstructed
    # job, the execution plan): five loads, ~0.7 s each, per `dagster job execute`. Resources
    # read settings when used; only USAGE_ETL_FIRST_DAY (partitions) and USAGE_ETL_AUTOMATION
    # (schedules' default status) are read at load, so one load per process serves them all.
    set_by_dagster = DefinitionsLoadContext.get() if DefinitionsLoadContext.is_set() else None
    # Only a code server's load (what the webserver and the daemon read; Dagster sets it as
    # INITIALIZATION) needs the catalog of installed component types that
    # `load_from_defs_folder` adds as repository metadata for the UI (~0.08 s a load); a run
    # (a run worker's RECONSTRUCTION, `dagster job execute`) or a script does not.
    for_a_code_server = (
        set_by_dagster is not None
        and set_by_dagster.load_type == DefinitionsLoadType.INITIALIZATION
    )
    with _collector_paused_then_frozen(), _one_load_context(set_by_dagster):
        tree = dg.ComponentTree.for_project(path_within_project=Path(__file__).parent)
        if for_a_code_server:
            return tree.build_defs()  # what dg.load_from_defs_folder returns
        # The defs folder alone: the same assets, checks, jobs, schedules, sensors, resources
        # and component tree, without the UI's catalog of installed component types.
        folder = tree.build_defs(tree.defs_module_path)
        return dg.Definitions.merge(folder, dg.Definitions(component_tree=tree))


@dg.definitions
def defs() -> dg.Definitions:
    return _load()


# A process that loaded this code location (a run, a run worker, the CLI) ends without the
# interpreter's last cyclic collection: it walks every object of Dagster, botocore's models,
# pyarrow and chDB only to free memory the OS takes back at once (~0.8 s per run process).
# Nothing here relies on a collected cycle at exit: the warehouse, the engine lock and the
# event log's connections are closed explicitly (resources' teardown, atexit), and atexit
# callbacks and non-cyclic finalizers still run.
atexit.register(gc.freeze)
