"""Monthly invoicing (contract §5): price usage_daily into invoice lines, draft → final,
adjustments for late usage, atomic per-period publication, completeness, checks and exports."""
