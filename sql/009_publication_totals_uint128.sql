-- usage_day_publications: a day's totals are summary figures, kept in a type that cannot
-- overflow. Every usage_daily group fits UInt64 (a group whose exact sum would not is
-- quarantined as group_sum_overflow instead of published), but the sum over a day's groups can
-- exceed it: the day must still publish, and its totals be recorded exactly.
ALTER TABLE ${database}.usage_day_publications ${on_cluster}
    MODIFY COLUMN bytes UInt128,
    MODIFY COLUMN request_count UInt128;
