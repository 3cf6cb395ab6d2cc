"""validate() skips building rule/field/value when no row breaks a rule; both paths agree."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from rollup_files import parquet_bytes, rollup

from usage_etl.rollups.schema import RollupKey, classify_key
from usage_etl.usage import validate as validation
from usage_etl.usage.readers import read_parquet

KEY = classify_key("p", "p/date=2026-10-05/hour=03/node=node-a/f.parquet", 1)

CLEAN = [rollup("e1"), rollup("e2", project_id=None, bytes=0), rollup("e3", minute=59)]
BROKEN = [*CLEAN, rollup("bad", bytes=-1), rollup("", direction="sideways")]


def _both_paths(rows, monkeypatch) -> tuple[validation.Validated, validation.Validated]:
    frame = read_parquet(parquet_bytes(rows)).frame
    fast = validation.validate(frame, KEY)
    monkeypatch.setattr(validation, "_any_broken", lambda rules: pl.lit(True))
    slow = validation.validate(frame, KEY)
    return fast, slow


@pytest.mark.parametrize("rows", [CLEAN, BROKEN], ids=["clean", "broken"])
def test_fast_path_agrees_with_the_full_rule_chain(rows, monkeypatch):
    assert isinstance(KEY, RollupKey)
    fast, slow = _both_paths(rows, monkeypatch)
    assert_frame_equal(fast.good, slow.good)
    assert_frame_equal(fast.bad, slow.bad)


def test_a_clean_file_takes_the_fast_path_and_loses_no_row():
    frame = read_parquet(parquet_bytes(CLEAN)).frame
    result = validation.validate(frame, KEY)
    assert result.bad is validation._EMPTY_BAD  # the rule chain was never built
    assert result.good["event_id"].to_list() == ["e1", "e2", "e3"]
    assert result.bad.height == 0


def test_a_null_in_a_rule_column_is_judged_by_the_full_chain():
    frame = read_parquet(parquet_bytes([rollup("e1"), rollup("e2", window_start=None)])).frame
    result = validation.validate(frame, KEY)
    assert result.bad["rule"].to_list() == ["window_start"]
    assert result.good["event_id"].to_list() == ["e1"]
