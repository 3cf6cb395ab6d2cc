"""The code location `usage_etl.definitions`.

Everything under `usage_etl/defs/` is discovered: one folder per area (usage, invoices,
reconciliation, automation), one concern per module. Loading definitions never touches
ClickHouse or S3.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
