-- Ingestion: the object ledger, the validated rollup rows and the quarantine.
-- All three are append-only. Readers take the *current* ledger entry of each object key
-- (argMax by recorded_at) and only rows whose (key, etag, run_id) match it, so leftovers of a
-- crashed or retried run never count, and nothing depends on background merges.

-- Every object seen under a day's prefix, each time a run decides about it.
CREATE TABLE IF NOT EXISTS ${database}.ingest_objects ${on_cluster}
(
    day              Date,
    object_key       String,
    etag             String,
    size             UInt64,
    last_modified    DateTime64(3, 'UTC'),
    node_id          String,
    hour             UInt8,
    format           LowCardinality(String),
    status           Enum8('loaded' = 1, 'quarantined' = 2, 'ignored' = 3),
    reason           String,
    rows_read        UInt64,
    rows_loaded      UInt64,
    rows_quarantined UInt64,
    run_id           String,
    recorded_at      DateTime64(6, 'UTC')
)
ENGINE = ${MergeTree}
PARTITION BY toYYYYMM(day)
ORDER BY (day, object_key, recorded_at);

-- Validated rollup rows, every version of every event_id, tagged with their source object.
-- Plain MergeTree (fast inserts); dedupe happens once per day at publish time.
CREATE TABLE IF NOT EXISTS ${database}.rollup_rows ${on_cluster}
(
    day            Date,
    event_id       String,
    node_id        LowCardinality(String),
    region         LowCardinality(String),
    account_id     String,
    project_id     String,
    direction      LowCardinality(String),
    operation      LowCardinality(String),
    artifact_kind  LowCardinality(String),
    network_path   LowCardinality(String),
    window_start   DateTime64(6, 'UTC'),
    window_seconds UInt32,
    bytes          UInt64,
    request_count  UInt64,
    emitted_at     DateTime64(6, 'UTC'),
    source_key     String,
    source_etag    String,
    source_row     UInt32,
    run_id         String
)
ENGINE = ${MergeTree}
PARTITION BY day
ORDER BY (event_id, emitted_at);

-- Rows (scope 'row') and whole files (scope 'file') that broke a contract rule.
CREATE TABLE IF NOT EXISTS ${database}.quarantined_rows ${on_cluster}
(
    day            Date,
    source_key     String,
    source_etag    String,
    scope          Enum8('file' = 1, 'row' = 2),
    source_row     UInt32,
    rule           LowCardinality(String),
    field          String,
    value          String,
    detail         String,
    run_id         String,
    quarantined_at DateTime64(6, 'UTC')
)
ENGINE = ${MergeTree}
PARTITION BY toYYYYMM(day)
ORDER BY (day, source_key, source_row);
