-- Invoicing (contract §5). Lines are replaced atomically per billing period with
-- ALTER TABLE ... REPLACE PARTITION from a per-run build table; `invoices` is a view over the
-- lines, so a subtotal always equals the sum of the lines finance can see.

-- Contract §5: exactly these columns, one row per line_id.
CREATE TABLE IF NOT EXISTS ${database}.invoice_line_items ${on_cluster}
(
    invoice_id             String,
    line_id                String,
    account_id             String,
    plan                   String,
    period_start           Date,
    period_end             Date,
    kind                   LowCardinality(String),
    corrected_period_start Nullable(Date),
    meter                  LowCardinality(String),
    tier                   UInt8,
    quantity               Decimal(38, 9),
    unit                   LowCardinality(String),
    unit_price             Decimal(18, 6),
    amount                 Decimal(18, 2),
    currency               LowCardinality(String),
    status                 LowCardinality(String),
    price_book_version     String,
    computed_at            DateTime64(3, 'UTC')
)
ENGINE = ${MergeTree}
PARTITION BY period_start
ORDER BY (account_id, invoice_id, line_id);

-- Contract §5: one row per invoice. A period is published whole, so all lines of an invoice
-- share one status; a final line is never rewritten, so its computed_at is when it was
-- finalized.
CREATE VIEW IF NOT EXISTS ${database}.invoices ${on_cluster} AS
SELECT
    invoice_id,
    account_id,
    period_start,
    period_end,
    currency,
    subtotal,
    if(draft_lines = 0, 'final', 'draft') AS status,
    if(draft_lines = 0, CAST(last_computed_at AS Nullable(DateTime64(3, 'UTC'))), NULL)
        AS finalized_at
FROM
(
    SELECT
        invoice_id,
        account_id,
        period_start,
        any(period_end) AS period_end,
        any(currency) AS currency,
        CAST(sum(amount) AS Decimal(18, 2)) AS subtotal,
        countIf(status != 'final') AS draft_lines,
        max(computed_at) AS last_computed_at
    FROM ${database}.invoice_line_items
    GROUP BY invoice_id, account_id, period_start
);

-- Append-only log of every publication of a period. A row with status 'final' makes the
-- period final for good: it records the checksum of the final lines (verified by every later
-- run and by the asset check) and the price book they were priced with, so adjustments for
-- late usage reprice the period with its own book.
CREATE TABLE IF NOT EXISTS ${database}.invoice_periods ${on_cluster}
(
    period_start       Date,
    period_end         Date,
    status             LowCardinality(String),
    finalized_at       Nullable(DateTime64(3, 'UTC')),
    lines_checksum     String,
    line_count         UInt64,
    adjustment_lines   UInt64,
    price_book_version String,
    price_book         String,
    as_of              DateTime64(3, 'UTC'),
    run_id             String,
    recorded_at        DateTime64(6, 'UTC')
)
ENGINE = ${MergeTree}
ORDER BY (period_start, recorded_at);
