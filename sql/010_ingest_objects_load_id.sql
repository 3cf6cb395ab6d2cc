-- ingest_objects.run_id has always held load ids (one per step attempt: `<dagster run id>.<8
-- hex>`, `.s3.<n>` for a native attempt), never Dagster run ids: `load_id` names them.
-- An ALIAS column, not a RENAME: adding it is a metadata-only change that rewrites no data,
-- cannot fail on a ReplicatedMergeTree or ON CLUSTER, is idempotent (IF NOT EXISTS), and
-- leaves every existing reader of `run_id` (and `SELECT *`, which omits ALIAS columns)
-- working, including code of the previous release during a rolling deploy. The pipeline reads
-- `load_id`; inserts still name the physical column `run_id` (ALIAS columns take no values).
ALTER TABLE ${database}.ingest_objects ${on_cluster}
    ADD COLUMN IF NOT EXISTS load_id String ALIAS run_id;
