"""04:00 UTC, two hours before the daily run: compaction has the engine to itself."""

import dagster as dg

from usage_etl.defs.maintenance.jobs import warehouse_maintenance
from usage_etl.defs.vocabulary import schedule_status

MAINTENANCE_CRON = "0 4 * * *"

warehouse_maintenance_schedule = dg.ScheduleDefinition(
    name="warehouse_maintenance_schedule",
    job=warehouse_maintenance,
    cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Every day at 04:00 UTC: merge settled staging days (warehouse_maintenance).",
)
