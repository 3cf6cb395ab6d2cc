"""The code location `usage_etl.definitions`.

Everything under `usage_etl/defs/` is discovered: one folder per area (usage, invoices,
reconciliation, automation), one concern per module. Loading definitions never touches
ClickHouse or S3.
"""

from functools import cache
from pathlib import Path

import dagster as dg


@cache
def _load() -> dg.Definitions:
    # Dagster asks for the definitions several times per process (the CLI, the reconstructed
    # job, the execution plan): five loads, ~0.7 s each, per `dagster job execute`. Resources
    # read settings when used; only USAGE_ETL_FIRST_DAY (partitions) and USAGE_ETL_AUTOMATION
    # (schedules' default status) are read at load, so one load per process serves them all.
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return _load()
