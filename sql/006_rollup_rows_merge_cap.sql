-- rollup_rows, merge policy: background merges only compact small parts (late files, single
-- objects), never a day's bulk load.
--
-- A day's load arrives in parts of ~280k rows (~15 MiB: the native insert's 262k-row blocks),
-- which is already what the day's readers want: each publish, check and audit reads the whole
-- day partition once. Merging those parts bought nothing but cost ~40% of the CPU of a 10M-row
-- daily run on the embedded engine, where merges run inside the run's own process
-- (docs/performance.md, session 6). Two parts whose sizes add up to more than 16 MiB are now
-- never merged in the background; smaller ones still are, so dribbles of late files do not
-- pile up. Reads never depend on merges (plain MergeTree, every version kept).
-- `OPTIMIZE TABLE rollup_rows PARTITION 'YYYY-MM-DD'` still compacts a day by hand, whatever
-- its size (docs/runbook.md).
ALTER TABLE ${database}.rollup_rows ${on_cluster}
    MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 16777216;
