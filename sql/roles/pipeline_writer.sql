-- The pipeline's own role: everything the Dagster runs and migrations do in the pipeline's
-- database (create/replace tables, build tables, REPLACE PARTITION, inserts), and nothing
-- outside it. Not a migration: apply with `usage-etl roles --apply` on a server deployment,
-- then `GRANT pipeline_writer TO <the pipeline's user>`.
CREATE ROLE IF NOT EXISTS pipeline_writer ${on_cluster};
GRANT ${on_cluster} CREATE DATABASE ON ${database}.* TO pipeline_writer;
GRANT ${on_cluster} SELECT, INSERT, ALTER TABLE, CREATE TABLE, CREATE VIEW, DROP TABLE, DROP VIEW, TRUNCATE, OPTIMIZE, SHOW TABLES ON ${database}.* TO pipeline_writer;
-- The application's cache events are the pipeline's input, never its output (contract §2):
-- read and create-if-missing only, so a bug or a leaked pipeline password cannot alter them.
REVOKE ${on_cluster} INSERT, ALTER TABLE, DROP TABLE, TRUNCATE, OPTIMIZE ON ${database}.${cache_events_table} FROM pipeline_writer;
