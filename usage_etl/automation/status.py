"""Whether schedules and sensors start RUNNING or STOPPED when a Dagster instance first sees them.

`USAGE_ETL_AUTOMATION=running` (the default, and what `scripts/dagster_prod.sh` sets) or
`stopped` (what `scripts/dev.sh` sets: looking at the demo in the UI must not start the daily
schedules against wall-clock days). Read when the definitions load. Toggling one in the UI is
stored in the instance and wins over this default.
"""

from __future__ import annotations

import os

AUTOMATION_ENV = "USAGE_ETL_AUTOMATION"


def automation_running() -> bool:
    value = (os.environ.get(AUTOMATION_ENV) or "running").strip().lower()
    if value not in ("running", "stopped"):
        raise ValueError(f"{AUTOMATION_ENV} must be running or stopped, got {value!r}")
    return value == "running"
