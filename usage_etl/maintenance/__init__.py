"""Warehouse housekeeping off the daily path: compaction of settled staging days."""
