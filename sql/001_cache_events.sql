-- Cache events: the application's own project-scoped analytics (contract §2).
-- The application owns this table; the pipeline only reads it. IF NOT EXISTS keeps an
-- application-created table untouched.
CREATE TABLE IF NOT EXISTS ${database}.${cache_events_table} ${on_cluster}
(
    event_id      String,
    occurred_at   DateTime64(3, 'UTC'),
    account_id    String,
    project_id    String,
    artifact_kind LowCardinality(String),
    action        Enum8('upload' = 1, 'download' = 2),
    size_bytes    UInt64
)
ENGINE = ${MergeTree}
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, project_id, artifact_kind, occurred_at, event_id);
