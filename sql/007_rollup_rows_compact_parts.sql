-- rollup_rows, part format: a load's parts (~15 MiB each, sql/006) are written in the Compact
-- format (all columns in one file) instead of Wide (two files per column).
--
-- Measured at 10M rows/day (docs/performance.md, session 6): the native insert's peak RSS fell
-- from 0.85 to 0.67 GiB at the same speed (one buffered stream per part writer instead of one
-- per column), the day's publish read them as fast, and a part has ~6 files instead of ~48, which
-- is what opening the engine pays for each part. A day merged by warehouse_maintenance is larger
-- than the threshold and becomes one Wide part.
ALTER TABLE ${database}.rollup_rows ${on_cluster}
    MODIFY SETTING min_bytes_for_wide_part = 67108864;
