"""Automation logic behind the schedules and sensors (usage_etl/defs/automation): which
partitions to request when, and how late files are noticed. Pure or instance-only: nothing here
opens ClickHouse."""
