"""Alerts for operators: settings, deadline arithmetic, one-line causes and delivery (webhook,
email). Nothing here imports Dagster definitions; the sensors are in usage_etl/defs/alerting."""
