-- usage_hourly and usage_daily, merge policy: background merges only compact small parts, never
-- the parts a large day's publish swaps in (the same cap as rollup_rows, sql/006).
--
-- A day of millions of rows is published in one part or two per account bucket (~10 for a
-- 10M-row day). On the embedded engine background merges run inside the run's own process:
-- usage_daily's parts were merged during the day's exactness check, competing with it for the
-- machine's two cores, and a merge of usage_hourly still running at the run's exit is work
-- thrown away (docs/performance.md, session 15). Reads never depend on merges: each day is one
-- partition replaced whole. warehouse_maintenance merges settled days of both tables into one
-- part each, off the daily path, so parts do not pile up for the engine to load at open.
ALTER TABLE ${database}.usage_hourly ${on_cluster}
    MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 16777216;

ALTER TABLE ${database}.usage_daily ${on_cluster}
    MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 16777216;
