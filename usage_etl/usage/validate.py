"""Every row rule of contract §1, vectorized with polars.

A row is reported under the first rule it breaks: problems found while parsing (bad JSON, a
value of an impossible type, an unparseable timestamp) first, then the `RowRule` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from usage_etl.rollups.schema import (
    DEFAULT_NETWORK_PATH,
    DIRECTIONS,
    MAX_EVENT_ID_LENGTH,
    NETWORK_PATHS,
    SCHEMA_VERSION,
    RollupKey,
    RowRule,
)
from usage_etl.usage.registry import NodeAuthorization

# Timestamps must fit ClickHouse's DateTime64(6): emitted_at outside this range is quarantined.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 1, 1, tzinfo=UTC)

RULE_DETAIL = {
    RowRule.INVALID_JSON: "line is not a JSON object",
    RowRule.SCHEMA_VERSION: f"schema_version must be {SCHEMA_VERSION}",
    RowRule.EVENT_ID: f"event_id must be a string of 1-{MAX_EVENT_ID_LENGTH} characters",
    RowRule.NODE_ID_MISMATCH: "node_id must equal the key's node=NODE_ID",
    RowRule.REGION: "region must be a non-empty string",
    RowRule.ACCOUNT_ID: "account_id must be a non-empty string",
    RowRule.PROJECT_ID: "project_id must be a string or null",
    RowRule.DIRECTION: "direction must be 'ingress' or 'egress'",
    RowRule.OPERATION: "operation must be a non-empty string",
    RowRule.ARTIFACT_KIND: "artifact_kind must be a non-empty string",
    RowRule.NETWORK_PATH: "network_path must be public_internet, private_network or unknown",
    RowRule.WINDOW_START: "window_start must be a UTC timestamp (RFC 3339 in NDJSON)",
    RowRule.WINDOW_OUTSIDE_HOUR: "window_start must lie inside the key's date/hour",
    RowRule.WINDOW_SECONDS: "window_seconds must be an integer > 0 that divides 3600",
    RowRule.BYTES: "bytes must be an integer with 0 <= bytes < 2^63",
    RowRule.REQUEST_COUNT: "request_count must be an integer with 0 <= request_count < 2^63",
    RowRule.EMITTED_AT: "emitted_at must be a UTC timestamp between 1970 and 2262",
    RowRule.TENANT_MISMATCH: "a self-hosted node may only report its own account",
    RowRule.UNREGISTERED_NODE: "the node is not in the node registry",
}


def _empty_or_null(name: str) -> pl.Expr:
    return pl.col(name).is_null() | (pl.col(name).str.len_chars() == 0)


def _bad_counter(name: str) -> pl.Expr:
    return pl.col(name).is_null() | (pl.col(name) < 0)


def _key_independent_rules() -> dict[RowRule, pl.Expr]:
    window_seconds = pl.col("window_seconds")
    emitted = pl.col("emitted_at")
    event_length = pl.col("event_id").str.len_chars()
    return {
        RowRule.SCHEMA_VERSION: pl.col("schema_version").fill_null(-1) != SCHEMA_VERSION,
        RowRule.EVENT_ID: (
            pl.col("event_id").is_null() | (event_length == 0)
            | (event_length > MAX_EVENT_ID_LENGTH)
        ),
        RowRule.REGION: _empty_or_null("region"),
        RowRule.ACCOUNT_ID: _empty_or_null("account_id"),
        RowRule.DIRECTION: ~pl.col("direction").is_in(list(DIRECTIONS)).fill_null(False),
        RowRule.OPERATION: _empty_or_null("operation"),
        RowRule.ARTIFACT_KIND: _empty_or_null("artifact_kind"),
        RowRule.NETWORK_PATH: (
            pl.col("network_path").is_not_null()
            & ~pl.col("network_path").is_in(list(NETWORK_PATHS))
        ),
        RowRule.WINDOW_START: pl.col("window_start").is_null(),
        RowRule.WINDOW_SECONDS: (
            window_seconds.is_null() | (window_seconds <= 0)
            | (3600 % window_seconds.clip(lower_bound=1) != 0)
        ),
        RowRule.BYTES: _bad_counter("bytes"),
        RowRule.REQUEST_COUNT: _bad_counter("request_count"),
        RowRule.EMITTED_AT: emitted.is_null() | (emitted < EARLIEST) | (emitted >= LATEST),
    }  # fmt: skip


# Built once: a file taking the Python path pays only for its two key-dependent rules (building
# all fifteen expressions was ~5 ms of polars' Python per file, a third of a small file's cost).
_KEY_INDEPENDENT = _key_independent_rules()


# (rule, field) in reporting order.
_RULE_ORDER = (
    (RowRule.SCHEMA_VERSION, "schema_version"),
    (RowRule.EVENT_ID, "event_id"),
    (RowRule.NODE_ID_MISMATCH, "node_id"),
    (RowRule.REGION, "region"),
    (RowRule.ACCOUNT_ID, "account_id"),
    (RowRule.DIRECTION, "direction"),
    (RowRule.OPERATION, "operation"),
    (RowRule.ARTIFACT_KIND, "artifact_kind"),
    (RowRule.NETWORK_PATH, "network_path"),
    (RowRule.WINDOW_START, "window_start"),
    (RowRule.WINDOW_OUTSIDE_HOUR, "window_start"),
    (RowRule.WINDOW_SECONDS, "window_seconds"),
    (RowRule.BYTES, "bytes"),
    (RowRule.REQUEST_COUNT, "request_count"),
    (RowRule.EMITTED_AT, "emitted_at"),
)


def _rules(
    key: RollupKey, node: NodeAuthorization | None = None
) -> list[tuple[RowRule, str, pl.Expr]]:
    """(rule, field, broken?) in reporting order; the node's own rules last."""
    window = pl.col("window_start")
    broken = {
        **_KEY_INDEPENDENT,
        RowRule.NODE_ID_MISMATCH: pl.col("node_id").fill_null("\0") != key.node_id,
        RowRule.WINDOW_OUTSIDE_HOUR: (window < key.hour_start) | (window >= key.hour_end),
    }
    rules = [(rule, field, broken[rule]) for rule, field in _RULE_ORDER]
    if node is not None and node.reject_unregistered:
        rules.append((RowRule.UNREGISTERED_NODE, "node_id", pl.lit(True)))
    if node is not None and node.only_account is not None:
        tenant = pl.col("account_id") != node.only_account
        rules.append((RowRule.TENANT_MISMATCH, "account_id", tenant))
    return rules


@dataclass(frozen=True)
class Validated:
    good: pl.DataFrame  # contract fields, typed for rollup_rows, plus source_row
    bad: pl.DataFrame  # source_row, rule, field, value, detail


def validate(
    frame: pl.DataFrame, key: RollupKey, node: NodeAuthorization | None = None
) -> Validated:
    """Split a parsed file into rows that load and rows that are quarantined (with a rule)."""
    rules = _rules(key, node)
    # The first broken rule of each row, by its index in `rules`: a flat coalesce, where a chain
    # of when/then per rule nests ~50 deep and polars spent ~10 ms planning it for every file.
    first = pl.coalesce(
        [pl.when(broken).then(pl.lit(n, pl.UInt8)) for n, (_, _, broken) in enumerate(rules)]
    )
    judged = frame.with_columns(first.alias("_first"))
    parse_problem = pl.col("_rule").is_not_null()
    broken_row = parse_problem | pl.col("_first").is_not_null()
    if not judged.select(broken_row.any()).item():
        # The common case, a clean file: skip building rule/field/value for every row.
        return Validated(_good(frame), _EMPTY_BAD)
    good = _good(judged.filter(~broken_row))
    details = pl.DataFrame(
        {"rule": [r.value for r in RULE_DETAIL], "detail": list(RULE_DETAIL.values())}
    )
    positions = list(range(len(rules)))

    def by_first(values: list[str]) -> pl.Expr:
        return pl.col("_first").replace_strict(positions, values, return_dtype=pl.String)

    # A row's value is its first broken rule's field, as text (computed for broken rows only).
    rule_value = pl.concat_list([pl.col(column).cast(pl.String) for _, column, _ in rules])
    bad = (
        judged.filter(broken_row)
        .select(
            pl.col("_row").alias("source_row"),
            pl.when(parse_problem)
            .then(pl.col("_rule"))
            .otherwise(by_first([name.value for name, _, _ in rules]))
            .alias("rule"),
            pl.when(parse_problem)
            .then(pl.col("_field"))
            .otherwise(by_first([column for _, column, _ in rules]))
            .fill_null("")
            .alias("field"),
            pl.when(parse_problem)
            .then(pl.col("_value"))
            .otherwise(rule_value.list.get(pl.col("_first")))
            .fill_null("null")
            .str.slice(0, 512)
            .alias("value"),
        )
        .join(details, on="rule", how="left")
        .with_columns(pl.col("detail").fill_null(""))
    )
    return Validated(good, bad)


def _good(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "event_id", "node_id", "region", "account_id",
        pl.col("project_id").fill_null(""),
        "direction", "operation", "artifact_kind",
        pl.col("network_path").fill_null(DEFAULT_NETWORK_PATH),
        "window_start",
        pl.col("window_seconds").cast(pl.UInt32),
        pl.col("bytes").cast(pl.UInt64),
        pl.col("request_count").cast(pl.UInt64),
        "emitted_at",
        pl.col("_row").alias("source_row"),
    )  # fmt: skip


_EMPTY_BAD = pl.DataFrame(
    schema={
        "source_row": pl.UInt32, "rule": pl.String, "field": pl.String, "value": pl.String,
        "detail": pl.String,
    }
)  # fmt: skip
