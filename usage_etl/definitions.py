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


def _one_load_context():
    """One Dagster load context for the whole folder load, when the caller set none.

    Without one (`dagster job execute -m`, `defs()` in a script or test), every
    `DefinitionsLoadContext.get()` of the component tree builds a new context, and each
    reads the instance's defs-state cursor from its run storage: 72 SQLite connections
    (~0.1-0.2 s) to load this code location. The webserver, daemon, code server and run
    worker set a context before loading; it is used as it is."""
    try:
        from dagster._core.definitions.definitions_load_context import (
            DefinitionsLoadContext,
            DefinitionsLoadType,
        )

        if DefinitionsLoadContext.is_set():
            return nullcontext()
        return DefinitionsLoadContext.scoped(
            DefinitionsLoadContext(load_type=DefinitionsLoadType.INITIALIZATION)
        )
    except (ImportError, AttributeError):  # a Dagster without these: load as before
        return nullcontext()


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
def _load() -> dg.Definitions:
    # Dagster asks for the definitions several times per process (the CLI, the reconstructed
    # job, the execution plan): five loads, ~0.7 s each, per `dagster job execute`. Resources
    # read settings when used; only USAGE_ETL_FIRST_DAY (partitions) and USAGE_ETL_AUTOMATION
    # (schedules' default status) are read at load, so one load per process serves them all.
    with _collector_paused_then_frozen(), _one_load_context():
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


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
