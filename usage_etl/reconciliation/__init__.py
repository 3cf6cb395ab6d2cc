"""Reconciliation of node rollups against cache events, and node-hour coverage."""
