-- Published, deduplicated usage. One partition per day, replaced atomically with
-- ALTER TABLE ... REPLACE PARTITION from a per-run build table, so a reader sees the old day or
-- the new day, never half of one, and plain SELECT ... GROUP BY is exact (no FINAL needed).

CREATE TABLE IF NOT EXISTS ${database}.usage_hourly ${on_cluster}
(
    day           Date,
    hour          DateTime('UTC'),
    account_id    String,
    project_id    String,
    region        LowCardinality(String),
    node_id       LowCardinality(String),
    direction     LowCardinality(String),
    operation     LowCardinality(String),
    artifact_kind LowCardinality(String),
    network_path  LowCardinality(String),
    bytes         UInt64,
    request_count UInt64,
    rollups       UInt64,  -- distinct event_ids (deduplicated rollups) in the group
    versions      UInt64,  -- staged rows those rollups were chosen from (rollups + duplicates)
    conflicts     UInt64   -- rollups whose latest emitted_at had differing contents
)
ENGINE = ${MergeTree}
PARTITION BY day
ORDER BY (account_id, hour, project_id, region, node_id, direction, operation, artifact_kind, network_path);

-- Contract §4: exactly these columns.
CREATE TABLE IF NOT EXISTS ${database}.usage_daily ${on_cluster}
(
    day           Date,
    account_id    String,
    project_id    String,
    region        LowCardinality(String),
    node_id       LowCardinality(String),
    direction     LowCardinality(String),
    operation     LowCardinality(String),
    artifact_kind LowCardinality(String),
    network_path  LowCardinality(String),
    bytes         UInt64,
    request_count UInt64
)
ENGINE = ${MergeTree}
PARTITION BY day
ORDER BY (account_id, day, project_id, region, node_id, direction, operation, artifact_kind, network_path);

-- One row per successful publish of a day: what went in, so invoices can prove completeness.
CREATE TABLE IF NOT EXISTS ${database}.usage_day_publications ${on_cluster}
(
    day               Date,
    run_id            String,
    published_at      DateTime64(6, 'UTC'),
    objects_loaded    UInt64,
    objects_quarantined UInt64,
    objects_ignored   UInt64,
    rows_loaded       UInt64,
    rollups           UInt64,
    duplicates        UInt64,
    conflicts         UInt64,
    bytes             UInt64,
    request_count     UInt64
)
ENGINE = ${MergeTree}
PARTITION BY toYYYYMM(day)
ORDER BY (day, published_at);
