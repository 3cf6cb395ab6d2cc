"""Hostile and malformed rollup files against the readers and the validator (property-based).

Invariants, for Parquet and NDJSON.gz alike:
* nothing but `FileQuarantined` ever escapes (no crash, no polars panic, no recursion error);
* every row is loaded exactly when the contract oracle (`hostile_rows.row_verdict`) says it is
  valid, else quarantined under the rule the oracle names; loaded values are the written ones;
* an NDJSON row gets the same verdict whichever parsing path its file takes;
* damaged files (random bytes, truncated, bit-flipped) are quarantined whole or, when the damage
  leaves a readable file, still load only rows that pass every rule.

CI runs a bounded number of examples; `pytest -m slow tests/reliability` runs the soak variants.
"""

from __future__ import annotations

import gzip
import io
import zlib
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_rows import KEY, MISSING, Value, json_line, row_verdict, rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_files import ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.rollups.schema import FIELDS, FileRule, RowRule
from usage_etl.usage.readers import FileQuarantined, read_rollup_file
from usage_etl.usage.validate import validate

CI_EXAMPLES = 50
SOAK_EXAMPLES = 1500
OFFSETS = ["Z", "+00:00", "+05:30", "-03:00"]


def _bounded(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def judge(body: bytes, fmt: str) -> tuple[dict[int, str | None], pl.DataFrame]:
    """Read and validate one file: {row number: rule or None}, and the rows that load."""
    parsed = read_rollup_file(body, fmt)
    result = validate(parsed.frame, KEY)
    verdicts = {row: None for row in result.good["source_row"].to_list()}
    for row, rule in result.bad.select("source_row", "rule").iter_rows():
        assert row not in verdicts, f"row {row} both loaded and quarantined"
        verdicts[row] = rule
    return verdicts, result.good


def expected(hostile: list[dict[str, Value]]) -> dict[int, str | None]:
    return {
        n: (None if (v := row_verdict(row)) is None else v.value)
        for n, row in enumerate(hostile, start=1)
    }


def assert_loaded_literally(good: pl.DataFrame, hostile: list[dict[str, Value]]) -> None:
    """Loaded rows carry exactly the values written (ids with quotes, NULs, emoji...)."""
    for record in good.iter_rows(named=True):
        row = hostile[record["source_row"] - 1]
        for name in ("event_id", "account_id", "region", "operation", "artifact_kind", "bytes"):
            assert record[name] == row[name].python, name
        project = row["project_id"].python
        assert record["project_id"] == ("" if project in (None, MISSING) else project)
        assert record["window_start"] == row["window_start"].python


# -- NDJSON.gz ---------------------------------------------------------------------------------


def ndjson_property(examples: int):
    @_bounded(examples)
    @given(
        hostile=st.lists(rows(json_only=True), min_size=1, max_size=6),
        offset=st.sampled_from(OFFSETS),
    )
    def check(hostile, offset):
        lines = [json_line(row, offset) for row in hostile]
        body = gzip.compress(b"\n".join(lines) + b"\n")
        verdicts, good = judge(body, "ndjson.gz")
        assert verdicts == expected(hostile)
        assert_loaded_literally(good, hostile)
        # One broken line sends the whole file down the careful path: same verdicts.
        careful, _ = judge(gzip.compress(b"\n".join([*lines, b"{broken"]) + b"\n"), "ndjson.gz")
        assert careful == {**verdicts, len(lines) + 1: RowRule.INVALID_JSON.value}

    return check


test_ndjson_rows_are_judged_by_the_contract = ndjson_property(CI_EXAMPLES)
test_ndjson_rows_soak = pytest.mark.slow(ndjson_property(SOAK_EXAMPLES))


garbage_lines = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"\n" not in b and b.strip() != b"" and not b.strip().startswith(b"{")
)


def garbage_property(examples: int):
    @_bounded(examples)
    @given(
        good=st.lists(rows(json_only=True), min_size=0, max_size=3),
        garbage=st.lists(garbage_lines | st.sampled_from([b"[" * 5000, b"null", b"[]", b'"x"']),
                         min_size=1, max_size=3),
    )  # fmt: skip
    def check(good, garbage):
        lines = [json_line(row, "Z") for row in good] + garbage
        verdicts, _ = judge(gzip.compress(b"\n".join(lines)), "ndjson.gz")
        rules = expected(good)
        rules.update({len(good) + i: "invalid_json" for i in range(1, len(garbage) + 1)})
        assert verdicts == rules

    return check


test_ndjson_garbage_lines_are_invalid_json = garbage_property(CI_EXAMPLES)
test_ndjson_garbage_soak = pytest.mark.slow(garbage_property(SOAK_EXAMPLES))


# -- Parquet -----------------------------------------------------------------------------------


def parquet_table(hostile: list[dict[str, Value]], unit: str, tz: str | None) -> bytes:
    types = {
        "schema_version": pa.int64(), "window_seconds": pa.int64(), "bytes": pa.int64(),
        "request_count": pa.int64(), "window_start": pa.timestamp(unit, tz),
        "emitted_at": pa.timestamp(unit, tz),
    }  # fmt: skip
    columns = {}
    for name in FIELDS:
        values = [row[name].python for row in hostile]
        values = [None if v is MISSING else v for v in values]
        if tz is None:  # naive timestamps mean UTC (contract §1)
            values = [v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in values]
        columns[name] = pa.array(values, types.get(name, pa.string()))
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def parquet_property(examples: int):
    @_bounded(examples)
    @given(
        hostile=st.lists(rows(json_only=False), min_size=1, max_size=6),
        unit=st.sampled_from(["ms", "us"]),
        tz=st.sampled_from([None, "UTC", "Asia/Kolkata"]),
    )
    def check(hostile, unit, tz):
        if unit == "ms":  # the file can only say milliseconds: so does the oracle
            hostile = [_to_millis(row) for row in hostile]
        verdicts, good = judge(parquet_table(hostile, unit, tz), "parquet")
        assert verdicts == expected(hostile)
        assert_loaded_literally(good, hostile)

    return check


def _to_millis(row: dict[str, Value]) -> dict[str, Value]:
    out = dict(row)
    for name in ("window_start", "emitted_at"):
        value = row[name]
        if isinstance(value.python, datetime):
            moment = value.python.replace(microsecond=value.python.microsecond // 1000 * 1000)
            out[name] = _rejudge(name, moment)
    return out


def _rejudge(name: str, moment: datetime) -> Value:
    from hostile_rows import END, EPOCH, HOUR, RULE

    if name == "window_start":
        ok = HOUR <= moment < HOUR + timedelta(hours=1)
        return Value(moment, None if ok else (RULE, RowRule.WINDOW_OUTSIDE_HOUR))
    return Value(moment, None if EPOCH <= moment < END else (RULE, RowRule.EMITTED_AT))


test_parquet_rows_are_judged_by_the_contract = parquet_property(CI_EXAMPLES)
test_parquet_rows_soak = pytest.mark.slow(parquet_property(SOAK_EXAMPLES))


@pytest.mark.parametrize(
    "raw, unit",
    [(10**16, "ms"), (-(10**16), "ms"), (9 * 10**18, "us"), (-(9 * 10**18), "us"),
     (2**63 - 1, "ms")],
)  # fmt: skip
def test_parquet_timestamps_beyond_any_calendar_are_quarantined(raw, unit):
    """Polars panics on such values (a BaseException): they must become a row rule."""
    base = parquet_table([_valid_row()], "us", "UTC")
    table = pq.read_table(io.BytesIO(base))
    index = table.schema.get_field_index("emitted_at")
    table = table.set_column(index, "emitted_at", pa.array([raw], pa.timestamp(unit)))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    verdicts, _ = judge(buffer.getvalue(), "parquet")
    assert verdicts == {1: RowRule.EMITTED_AT.value}


def _valid_row() -> dict[str, Value]:
    return {
        name: Value(value, None) for name, value in rollup("e1", day=KEY.day, hour=KEY.hour).items()
    }


def test_parquet_counters_at_and_above_2_63_are_out_of_range():
    values = [2**63 - 1, 2**63, 2**64 - 1]
    table = pa.table(
        {**{k: [v] * 3 for k, v in rollup("e", day=KEY.day, hour=KEY.hour).items()
            if k not in ("bytes",)},
         "bytes": pa.array(values, pa.uint64())}
    )  # fmt: skip
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    verdicts, good = judge(buffer.getvalue(), "parquet")
    assert verdicts == {1: None, 2: "bytes", 3: "bytes"}
    assert good["bytes"].to_list() == [2**63 - 1]


@pytest.mark.parametrize(
    "column, arrow_type, values",
    [
        ("bytes", pa.float64(), [float("nan")]),
        ("bytes", pa.float64(), [float("inf")]),
        ("bytes", pa.string(), ["12"]),
        ("request_count", pa.bool_(), [True]),
        ("window_start", pa.string(), ["2026-10-05T03:00:00Z"]),
        ("emitted_at", pa.date32(), [datetime(2026, 10, 5).date()]),
        ("account_id", pa.int64(), [42]),
        ("event_id", pa.list_(pa.string()), [["a"]]),
        ("project_id", pa.struct([("a", pa.int8())]), [{"a": 1}]),
    ],
)
def test_parquet_columns_of_the_wrong_type_quarantine_the_file(column, arrow_type, values):
    row = rollup("e1", day=KEY.day, hour=KEY.hour)
    table = pa.table({k: [v] for k, v in row.items() if k != column})
    table = table.append_column(column, pa.array(values, arrow_type))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with pytest.raises(FileQuarantined) as raised:
        read_rollup_file(buffer.getvalue(), "parquet")
    assert raised.value.rule == FileRule.COLUMN_TYPE


# -- damaged files -----------------------------------------------------------------------------


def _sample_files() -> dict[str, bytes]:
    good = [rollup(f"e{i}", day=KEY.day, hour=KEY.hour, bytes=i) for i in range(20)]
    return {"parquet": parquet_bytes(good), "ndjson.gz": ndjson_gz_bytes(good)}


SAMPLES = _sample_files()


def loads_only_valid_rows(body: bytes, fmt: str) -> dict | None:
    """Read a possibly damaged file: None if quarantined whole, else its verdicts, after
    checking every loaded row against the contract rules independently."""
    try:
        verdicts, good = judge(body, fmt)
    except FileQuarantined as exc:
        assert exc.rule in FileRule
        return None
    for record in good.iter_rows(named=True):
        assert 1 <= len(record["event_id"]) <= 256 and record["node_id"] == KEY.node_id
        assert record["region"] and record["account_id"] and record["operation"]
        assert record["artifact_kind"] and record["direction"] in ("ingress", "egress")
        assert record["network_path"] in ("public_internet", "private_network", "unknown")
        assert KEY.hour_start <= record["window_start"] < KEY.hour_end
        assert record["window_seconds"] > 0 and 3600 % record["window_seconds"] == 0
        assert 0 <= record["bytes"] < 2**63 and 0 <= record["request_count"] < 2**63
        assert datetime(1970, 1, 1, tzinfo=UTC) <= record["emitted_at"]
        assert record["emitted_at"] < datetime(2262, 1, 1, tzinfo=UTC)
    return verdicts


def damage_property(examples: int):
    @_bounded(examples)
    @given(
        fmt=st.sampled_from(sorted(SAMPLES)),
        damage=st.one_of(
            st.tuples(st.just("random"), st.binary(max_size=2000)),
            st.tuples(st.just("truncate"), st.floats(0, 0.999)),
            st.tuples(st.just("flip"), st.lists(st.integers(0, 10**9), min_size=1, max_size=8)),
        ),
    )
    def check(fmt, damage):
        original = SAMPLES[fmt]
        kind, how = damage
        if kind == "random":
            body = how
        elif kind == "truncate":
            body = original[: int(len(original) * how)]
        else:
            flipped = bytearray(original)
            for position in how:
                flipped[position % len(flipped)] ^= 1 << (position % 8)
            body = bytes(flipped)
        verdicts = loads_only_valid_rows(body, fmt)
        if kind == "truncate":
            assert verdicts is None  # a cut file is never half-loaded
        if fmt == "ndjson.gz" and kind == "flip" and verdicts is not None:
            # gzip's CRC-32 catches damage to the data: what still reads is the original.
            assert verdicts == loads_only_valid_rows(original, fmt)

    return check


test_damaged_files_never_load_invalid_rows = damage_property(CI_EXAMPLES * 2)
test_damaged_files_soak = pytest.mark.slow(damage_property(SOAK_EXAMPLES * 2))


def test_empty_and_tiny_bodies_are_quarantined_whole():
    """A zero-byte or header-only rollup file is a failed upload, not an empty hour."""
    for fmt in SAMPLES:
        for body in (b"", b"PAR1", b"\x1f\x8b", gzip.compress(b"")[:-1]):
            with pytest.raises(FileQuarantined) as raised:
                read_rollup_file(body, fmt)
            assert raised.value.rule == FileRule.UNREADABLE


def test_a_complete_gzip_of_nothing_is_an_empty_file():
    verdicts, _ = judge(gzip.compress(b""), "ndjson.gz")
    assert verdicts == {}


def test_a_gzip_stream_is_read_up_to_the_decompressed_size_cap_and_no_further(monkeypatch):
    from usage_etl.usage import readers

    text = gzip.decompress(
        ndjson_gz_bytes([rollup(f"e{i}", day=KEY.day, hour=KEY.hour) for i in range(3)])
    )
    members = gzip.compress(text[:100]) + gzip.compress(text[100:])  # the cap spans members
    monkeypatch.setattr(readers, "MAX_DECOMPRESSED_BYTES", len(text))
    verdicts, good = judge(members, "ndjson.gz")
    assert verdicts == {1: None, 2: None, 3: None} and good.height == 3
    monkeypatch.setattr(readers, "MAX_DECOMPRESSED_BYTES", len(text) - 1)
    with pytest.raises(FileQuarantined) as raised:
        read_rollup_file(members, "ndjson.gz")
    assert raised.value.rule == FileRule.UNREADABLE
    assert "USAGE_ETL_MAX_DECOMPRESSED_BYTES" in raised.value.detail


def test_gzip_members_are_read_whole_and_trailing_garbage_quarantines():
    rows_ = [rollup(f"e{i}", day=KEY.day, hour=KEY.hour) for i in range(2)]
    first, second = (ndjson_gz_bytes([r]) for r in rows_)
    verdicts, good = judge(first + second, "ndjson.gz")  # a node appended a second member
    assert verdicts == {1: None, 2: None} and good["event_id"].to_list() == ["e0", "e1"]
    with pytest.raises(FileQuarantined):
        read_rollup_file(first + zlib.compress(b"tail"), "ndjson.gz")
