"""Column schemas of the table assets, shown in the Dagster UI (asset → Overview → Columns).

Attached as `dagster/column_schema` definition metadata. Types are the ClickHouse types of the
DDL in sql/; the finance tables' names, types and meanings are those of docs/finance.md
(tests/test_column_schemas.py keeps the two in step).
"""

import dagster as dg

COLUMN_SCHEMA = "dagster/column_schema"


def _schema(*columns: tuple[str, str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, type_, description) for name, type_, description in columns]
    )


_DIMENSIONS = (
    ("account_id", "String", "the tenant"),
    ("project_id", "String", "project within the account; empty when not project-bound"),
    ("region", "LowCardinality(String)", "region of the cache node"),
    ("node_id", "LowCardinality(String)", "cache node that served the traffic"),
    ("direction", "LowCardinality(String)", "`egress` or `ingress`"),
    ("operation", "LowCardinality(String)", "cache operation (e.g. `get`, `put`)"),
    ("artifact_kind", "LowCardinality(String)", "artifact kind (xcode, gradle, nx, …)"),
    ("network_path", "LowCardinality(String)", "`public_internet`, `private_network`, …"),
)
_COUNTERS = (
    ("bytes", "UInt64", "bytes moved"),
    ("request_count", "UInt64", "requests served"),
)

ROLLUP_ROWS = _schema(
    ("day", "Date", "UTC day of the rollup window (the partition)"),
    ("event_id", "String", "the rollup's id; a re-delivery repeats it"),
    *((name, "LowCardinality(String)", meaning) for name, _, meaning in _DIMENSIONS),
    ("window_start", "DateTime64(6, 'UTC')", "start of the rollup window"),
    ("window_seconds", "UInt32", "length of the rollup window"),
    *_COUNTERS,
    ("emitted_at", "DateTime64(6, 'UTC')", "when the node emitted this version"),
    ("source_key", "LowCardinality(String)", "S3 key of the object the row came from"),
    ("source_etag", "LowCardinality(String)", "ETag of that object"),
    ("source_row", "UInt32", "row number in that object"),
    ("run_id", "LowCardinality(String)", "the load (Dagster run and attempt) that staged it"),
    ("event_hash", "UInt64", "cityHash64(event_id), finds repeated event_ids"),
    ("load_key", "FixedString(16)", "sipHash128(source_key, source_etag, run_id)"),
)

USAGE_HOURLY = _schema(
    ("day", "Date", "UTC day (the partition)"),
    ("hour", "DateTime('UTC')", "UTC hour"),
    *_DIMENSIONS,
    *_COUNTERS,
    ("rollups", "UInt64", "distinct event_ids (deduplicated rollups) in the group"),
    ("versions", "UInt64", "staged rows those rollups were chosen from (rollups + duplicates)"),
    ("conflicts", "UInt64", "rollups whose latest emitted_at had differing contents"),
)

USAGE_DAILY = _schema(("day", "Date", "UTC day (the partition)"), *_DIMENSIONS, *_COUNTERS)

CACHE_EVENTS = _schema(
    ("event_id", "String", "the application's event id"),
    ("occurred_at", "DateTime64(3, 'UTC')", "when the cache served or stored the artifact"),
    ("account_id", "String", "the tenant"),
    ("project_id", "String", "the project"),
    ("artifact_kind", "LowCardinality(String)", "artifact kind"),
    ("action", "Enum8('upload' = 1, 'download' = 2)", "upload (ingress) or download (egress)"),
    ("size_bytes", "UInt64", "artifact size"),
)

# docs/finance.md, "invoice_line_items — one row per line".
INVOICE_LINE_ITEMS = _schema(
    ("invoice_id", "String",
     "`inv_` + 32 hex of sha256(account_id, period_start); the same on every run"),
    ("line_id", "String",
     "`li_` + 32 hex of sha256(invoice_id, kind, meter, tier, corrected_period_start, "
     "reference when not empty)"),
    ("account_id", "String", "the tenant"),
    ("plan", "String", "price book plan of the account (`accounts:` entry, else `default_plan`)"),
    ("period_start", "Date", "first day of the invoice's month (UTC)"),
    ("period_end", "Date", "first day of the next month (exclusive)"),
    ("kind", "LowCardinality(String)",
     "`usage`, `adjustment` (late usage of a final period), `fixed` (plan fee), `minimum` "
     "(commitment true-up, or its correction), `credit` (negative, a grant consumed)"),
    ("corrected_period_start", "Nullable(Date)",
     "adjustments and true-up corrections: the final period corrected; else NULL"),
    ("meter", "LowCardinality(String)",
     "`egress_bytes`, `ingress_bytes`, `requests` or a defined meter; `''` for fixed, minimum, "
     "credit"),
    ("reference", "String", "a credit line's grant id; `''` otherwise"),
    ("tier", "UInt8", "1-based graduated tier; 0 for fixed, minimum, credit"),
    ("quantity", "Decimal(38, 9)", "units billed in this tier, rounded half up to 9 decimals"),
    ("unit", "LowCardinality(String)",
     "`GiB` (2^30 bytes), `1k` (1000 requests), `unit` (1), or `period` (fixed, minimum, "
     "credit: quantity 1)"),
    ("unit_price", "Decimal(18, 6)", "price of one unit in this tier"),
    ("amount", "Decimal(18, 2)", "ROUND_HALF_UP(exact tier quantity × unit_price, 2)"),
    ("currency", "LowCardinality(String)", "price book currency"),
    ("status", "LowCardinality(String)", "`draft` or `final`"),
    ("price_book_version", "String", "`version` of the book that priced this line"),
    ("computed_at", "DateTime64(3, 'UTC')",
     "when the line was written; for a final line, when it became final"),
)  # fmt: skip

# docs/finance.md, "invoices — one row per invoice" (a view over the lines).
_AS_ON_THE_LINES = "as on the lines"
INVOICES = _schema(
    ("invoice_id", "String", _AS_ON_THE_LINES),
    ("account_id", "String", _AS_ON_THE_LINES),
    ("period_start", "Date", _AS_ON_THE_LINES),
    ("period_end", "Date", _AS_ON_THE_LINES),
    ("currency", "LowCardinality(String)", _AS_ON_THE_LINES),
    ("subtotal", "Decimal(18, 2)",
     "sum of the amounts of the invoice's lines (usage + adjustments)"),
    ("status", "String", "`final` when every line is final, else `draft`"),
    ("finalized_at", "Nullable(DateTime64(3, 'UTC'))",
     "when the period was finalized; NULL while draft"),
)  # fmt: skip


def column_schema(schema: dg.TableSchema) -> dict:
    """Definition metadata for an asset spec: `metadata=column_schema(USAGE_DAILY)`."""
    return {COLUMN_SCHEMA: schema}
