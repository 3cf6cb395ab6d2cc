"""Warehouse housekeeping that must stay off the daily run's path (compaction of staging)."""
