"""validate() reports each row under the first rule it breaks, and skips building rule/field/value
when no row breaks one.

The expected verdicts come from an oracle that evaluates every rule expression on its own and
picks each row's first broken rule in Python, row by row: another way to the same answer than
validate()'s single vectorized pass.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from rollup_files import ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.rollups.schema import RollupKey, classify_key
from usage_etl.usage import validate as validation
from usage_etl.usage.readers import read_ndjson_gz, read_parquet
from usage_etl.usage.registry import NodeAuthorization

KEY = classify_key("p", "p/date=2026-10-05/hour=03/node=node-a/f.parquet", 1)

CLEAN = [rollup("e1"), rollup("e2", project_id=None, bytes=0), rollup("e3", minute=59)]
BROKEN = [
    *CLEAN,
    rollup("bad", bytes=-1),
    rollup("", direction="sideways"),  # two rules: event_id comes first
    rollup("e6", node_id="node-b", region=""),
    rollup("e7", window_start=None),
    rollup("e8", hour=4),  # outside the key's hour
    rollup("e9", window_seconds=7),
    rollup("e10", request_count=None, network_path="satellite"),
    rollup("e11", emitted_at=datetime(2300, 1, 1, tzinfo=UTC)),
    rollup("e12", schema_version=2, account_id=None),
    rollup("e13", operation="", artifact_kind=""),
    rollup("e14", account_id="acct-2"),  # another tenant: broken only for a self-hosted node
]
# NDJSON adds problems found while parsing: a line that is no JSON object, a text timestamp
# that does not parse, a number given as text.
RAW_LINES = (b"not json", b'{"event_id": "e20", "window_start": "yesterday"}', b'{"bytes": "9"}')


def _oracle(frame: pl.DataFrame, rules) -> list[tuple[int, str, str, str] | None]:
    """(source_row, rule, field, value) of each row, or None for a row that loads."""
    flags = [
        frame.with_columns(broken.fill_null(False).alias("_flag"))["_flag"].to_list()
        for _, _, broken in rules
    ]
    verdicts = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        if row["_rule"] is not None:
            verdicts.append((row["_row"], row["_rule"], row["_field"] or "", row["_value"]))
            continue
        broken = next((n for n, flag in enumerate(flags) if flag[i]), None)
        if broken is None:
            verdicts.append(None)
            continue
        name, field, _ = rules[broken]
        value = frame.select(pl.col(field).cast(pl.String)).item(i, 0)
        verdicts.append((row["_row"], name.value, field, value))
    return [
        None if v is None else (v[0], v[1], v[2], "null" if v[3] is None else v[3][:512])
        for v in verdicts
    ]


@pytest.mark.parametrize(
    "rows, raw_lines, node",
    [
        (CLEAN, (), None),
        (BROKEN, (), None),
        (BROKEN, RAW_LINES, None),
        (BROKEN, (), NodeAuthorization(only_account="acct-1")),
        (CLEAN, (), NodeAuthorization(reject_unregistered=True)),
    ],
    ids=["clean", "broken", "broken-ndjson", "self-hosted", "unregistered"],
)
def test_each_row_is_reported_under_its_first_broken_rule(rows, raw_lines, node):
    assert isinstance(KEY, RollupKey)
    if raw_lines:
        frame = read_ndjson_gz(ndjson_gz_bytes(rows, raw_lines)).frame
    else:
        frame = read_parquet(parquet_bytes(rows)).frame
    expected = _oracle(frame, validation._rules(KEY, node))

    result = validation.validate(frame, KEY, node)

    loads = [row for row, verdict in zip(frame["_row"], expected, strict=True) if verdict is None]
    assert result.good["source_row"].to_list() == loads
    got = [tuple(r) for r in result.bad.select("source_row", "rule", "field", "value").iter_rows()]
    assert got == [v for v in expected if v is not None]
    detail_of = {rule.value: detail for rule, detail in validation.RULE_DETAIL.items()}
    for rule, detail in zip(result.bad["rule"], result.bad["detail"], strict=True):
        assert detail == detail_of.get(rule, "")


def test_the_oracle_sees_every_kind_of_breakage():
    """The cases above are not vacuous: most rows break something, under many rules."""
    frame = read_ndjson_gz(ndjson_gz_bytes(BROKEN, RAW_LINES)).frame
    verdicts = [v for v in _oracle(frame, validation._rules(KEY)) if v is not None]
    assert len({rule for _, rule, _, _ in verdicts}) >= 10
    assert any(v[3] == "null" for v in verdicts)


def test_a_clean_file_takes_the_fast_path_and_loses_no_row():
    frame = read_parquet(parquet_bytes(CLEAN)).frame
    result = validation.validate(frame, KEY)
    assert result.bad is validation._EMPTY_BAD  # rule/field/value were never built
    assert result.good["event_id"].to_list() == ["e1", "e2", "e3"]


def test_a_null_in_a_rule_column_is_judged_by_the_full_chain():
    frame = read_parquet(parquet_bytes([rollup("e1"), rollup("e2", window_start=None)])).frame
    result = validation.validate(frame, KEY)
    assert result.bad["rule"].to_list() == ["window_start"]
    assert result.good["event_id"].to_list() == ["e1"]
