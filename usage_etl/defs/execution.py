"""The code location's default executor: in-process.

It applies to runs the two named jobs do not cover: materializations and backfills launched
from the asset graph (Dagster's implicit asset job). One process per run is what the embedded
ClickHouse engine admits; a step per process would start the engine, and wait for its lock,
once per step."""

import dagster as dg


@dg.definitions
def execution() -> dg.Definitions:
    return dg.Definitions(executor=dg.in_process_executor)
