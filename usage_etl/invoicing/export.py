"""Finance exports: a period's lines and invoices as CSV and Parquet, with a checksum manifest.

Files go to `s3://<landing bucket>/<parent of the landing prefix>/exports/invoices/
period=YYYY-MM/` (for the default landing prefix `rollups`: `exports/invoices/period=...`),
next to the rollups but outside the prefix the ingestion lists. With a usage statement
(usage_etl.invoicing.statement) the export also holds usage_statement.csv/.parquet: one row per
invoice × day × project × meter, adding up exactly to the usage lines. The manifest is written last,
so a manifest present means every file it lists is complete; each file's sha256 lets finance
verify what they loaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from usage_etl.invoicing.lines import LINE_COLUMNS
from usage_etl.invoicing.statement import (
    STATEMENT_COLUMNS,
    STATEMENT_RULE,
    STATEMENT_SCHEMA,
    check_statement,
)
from usage_etl.periods import Period

INVOICE_COLUMNS = (
    "invoice_id", "account_id", "period_start", "period_end", "currency", "subtotal", "status",
    "finalized_at",
)  # fmt: skip
TIMESTAMP = pa.timestamp("ms", tz="UTC")
LINE_SCHEMA = pa.schema(
    [
        ("invoice_id", pa.string()), ("line_id", pa.string()), ("account_id", pa.string()),
        ("plan", pa.string()), ("period_start", pa.date32()), ("period_end", pa.date32()),
        ("kind", pa.string()), ("corrected_period_start", pa.date32()), ("meter", pa.string()),
        ("reference", pa.string()), ("tier", pa.uint8()), ("quantity", pa.decimal128(38, 9)),
        ("unit", pa.string()),
        ("unit_price", pa.decimal128(18, 6)), ("amount", pa.decimal128(18, 2)),
        ("currency", pa.string()), ("status", pa.string()),
        ("price_book_version", pa.string()), ("computed_at", TIMESTAMP),
    ]
)  # fmt: skip
INVOICE_SCHEMA = pa.schema(
    [
        ("invoice_id", pa.string()), ("account_id", pa.string()), ("period_start", pa.date32()),
        ("period_end", pa.date32()), ("currency", pa.string()),
        ("subtotal", pa.decimal128(18, 2)), ("status", pa.string()),
        ("finalized_at", TIMESTAMP),
    ]
)  # fmt: skip


def exports_prefix(landing_prefix: str, period: Period) -> str:
    parent = landing_prefix.strip("/").rpartition("/")[0]
    head = f"{parent}/" if parent else ""
    return f"{head}exports/invoices/period={period.label}/"


def cell(value) -> str:
    """A value as finance reads it in CSV: exact decimals, ISO dates, empty for NULL."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):  # RFC 3339 in UTC; naive values from ClickHouse are UTC
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_csv(rows: list[dict], columns: tuple[str, ...]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row[c]) for c in columns])
    return out.getvalue().encode()


def to_parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    table = pa.Table.from_pylist([{c: r[c] for c in schema.names} for r in rows], schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@dataclass(frozen=True)
class ExportResult:
    bucket: str
    prefix: str
    manifest: dict

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def export_period(
    s3,
    bucket: str,
    landing_prefix: str,
    period: Period,
    lines: list[dict],
    invoices: list[dict],
    extra: dict | None = None,
    statement: list[dict] | None = None,
) -> ExportResult:
    prefix = exports_prefix(landing_prefix, period)
    files = {
        "invoice_line_items.csv": (to_csv(lines, LINE_COLUMNS), len(lines)),
        "invoice_line_items.parquet": (to_parquet(lines, LINE_SCHEMA), len(lines)),
        "invoices.csv": (to_csv(invoices, INVOICE_COLUMNS), len(invoices)),
        "invoices.parquet": (to_parquet(invoices, INVOICE_SCHEMA), len(invoices)),
    }
    manifest = {"period": period.label, **(extra or {}), "files": {}}
    if statement is not None:
        files.update(statement_files(statement))
        manifest["usage_statement"] = statement_manifest(statement, lines)
    for name, (body, rows) in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        manifest["files"][name] = {
            "sha256": hashlib.sha256(body).hexdigest(),
            "bytes": len(body),
            "rows": rows,
        }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    s3.put_object(
        Bucket=bucket, Key=prefix + "manifest.json", Body=body, ContentType="application/json"
    )
    return ExportResult(bucket, prefix, manifest)


def statement_files(statement: list[dict]) -> dict[str, tuple[bytes, int]]:
    return {
        "usage_statement.csv": (to_csv(statement, STATEMENT_COLUMNS), len(statement)),
        "usage_statement.parquet": (to_parquet(statement, STATEMENT_SCHEMA), len(statement)),
    }


def statement_manifest(statement: list[dict], lines: list[dict]) -> dict:
    """The statement's rule, and whether it adds up to the usage lines of every invoice."""
    checks = check_statement(statement, lines)
    return {
        "rule": STATEMENT_RULE,
        "adds_up_to_usage_lines": all(c.ok for c in checks),
        "mismatches": [
            {"invoice_id": c.invoice_id, "meter": c.meter, "statement": format(c.statement, "f"),
             "lines": format(c.lines, "f")}
            for c in checks if not c.ok
        ],
    }  # fmt: skip
