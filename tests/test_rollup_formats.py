"""The format registry (rollups/formats.py): every suffix routes to its reader, an unknown one
raises instead of being read as NDJSON, and the registry holds exactly the contract's suffixes."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from rollup_files import PARQUET_SCHEMA, ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.rollups import formats
from usage_etl.rollups.formats import (
    FORMATS,
    SUFFIXES,
    RollupFormat,
    UnknownFormat,
    format_of_name,
    rollup_format,
)
from usage_etl.rollups.schema import IgnoreReason, RollupKey, classify_key
from usage_etl.simulator import writer
from usage_etl.usage import native, readers

REPO = Path(__file__).resolve().parents[1]
DAY = date(2026, 10, 5)


def key_with(name: str) -> str:
    return f"p/date={DAY}/hour=03/node=node-a/{name}"


@pytest.mark.parametrize("entry", FORMATS, ids=lambda f: f.name)
def test_each_registered_suffix_routes_to_its_reader(entry, monkeypatch):
    rollup_key = classify_key("p", key_with(f"part-0{entry.suffix}"), 10)
    assert isinstance(rollup_key, RollupKey) and rollup_key.format == entry.name
    assert rollup_format(rollup_key.format) is entry
    assert readers.reader_for(entry.name) is getattr(readers, entry.reader)
    # read_rollup_file calls exactly the function the entry names, whatever the bytes.
    calls = []
    monkeypatch.setattr(readers, entry.reader, lambda body: calls.append(body) or "parsed")
    assert readers.read_rollup_file(b"body", entry.name) == "parsed" and calls == [b"body"]


@pytest.mark.parametrize(
    ("fmt", "body"),
    [("parquet", parquet_bytes([rollup("e1")])), ("ndjson.gz", ndjson_gz_bytes([rollup("e1")]))],
)
def test_registered_readers_parse_their_format(fmt, body):
    parsed = readers.read_rollup_file(body, fmt)
    assert parsed.frame["event_id"].to_list() == ["e1"]


@pytest.mark.parametrize("fmt", ["parquet", "ndjson.gz"])
def test_the_simulator_writes_what_the_registered_reader_reads(fmt):
    frame = pl.DataFrame([rollup("e1")], schema=PARQUET_SCHEMA)
    body = writer.body(frame, fmt, list(frame.columns), naive_timestamps=False)
    assert readers.read_rollup_file(body, fmt).frame["event_id"].to_list() == ["e1"]


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_the_simulator_refuses_a_format_the_registry_does_not_know(fmt):
    frame = pl.DataFrame([rollup("e1")], schema=PARQUET_SCHEMA)
    with pytest.raises(UnknownFormat, match=fmt):
        writer.body(frame, fmt, list(frame.columns), naive_timestamps=False)


@pytest.mark.parametrize("name", ["x.csv", "x.json", "x.gz", "x.avro", "x.parquet.tmp"])
def test_an_unknown_suffix_raises_naming_the_key_and_the_known_suffixes(name):
    with pytest.raises(UnknownFormat, match=re.escape(name)) as raised:
        format_of_name(name)
    assert all(suffix in str(raised.value) for suffix in SUFFIXES)
    with pytest.raises(UnknownFormat):
        _ = RollupKey(DAY, 3, "node-a", name).format


@pytest.mark.parametrize("fmt", ["csv", "avro", "", "Parquet"])
def test_an_unknown_format_name_raises_instead_of_reading_ndjson(fmt):
    known = f"(known: {', '.join(f.name for f in FORMATS)})"
    with pytest.raises(UnknownFormat, match=re.escape(known)):
        readers.read_rollup_file(b"{}\n", fmt)


def test_a_stray_object_is_still_ignored_not_refused():
    """The loud refusal is for code handed an unknown suffix; listing still ignores strays."""
    assert classify_key("p", key_with("data.csv"), 10) is IgnoreReason.UNSUPPORTED_SUFFIX
    assert classify_key("p", key_with("_SUCCESS"), 0) is IgnoreReason.EMPTY


def test_the_registry_holds_exactly_the_suffixes_the_contract_lists():
    contract = (REPO / "docs" / "contract.md").read_text()
    listed = re.findall(
        r"^PREFIX/date=YYYY-MM-DD/hour=HH/node=NODE_ID/<any name>(\S+)$", contract, re.M
    )
    assert listed and sorted(listed) == sorted(SUFFIXES)


def test_names_and_suffixes_are_unique_and_readers_exist():
    assert len({f.name for f in FORMATS}) == len({f.suffix for f in FORMATS}) == len(FORMATS)
    assert all(callable(getattr(readers, f.reader, None)) for f in FORMATS)
    assert all(format_of_name(f"x{f.suffix}") is f for f in FORMATS)
    assert formats.is_rollup_name("a.b.parquet") and not formats.is_rollup_name("a.csv")


def _candidate(name: str) -> native.Candidate:
    key = key_with(name)
    return native.Candidate(key, "etag", classify_key("p", key, 10), size=10)


def test_native_path_hands_back_a_python_only_format_without_querying(monkeypatch):
    python_only = RollupFormat("parquet", ".parquet", reader="read_parquet", native=None)
    monkeypatch.setattr(native, "rollup_format", lambda name: python_only)
    access = native.S3Access("http://s3", "k", "s")
    result = native.load_objects(None, access, "b", DAY, [_candidate("x.parquet")], "load")
    assert result.loaded == {} and result.reasons == {key_with("x.parquet"): "no native reader"}


def test_native_path_refuses_an_input_format_it_has_no_plan_for(monkeypatch):
    avro = RollupFormat("parquet", ".parquet", reader="read_parquet", native="Avro")
    monkeypatch.setattr(native, "rollup_format", lambda name: avro)
    access = native.S3Access("http://s3", "k", "s")
    with pytest.raises(UnknownFormat, match="Avro"):
        native.load_objects(None, access, "b", DAY, [_candidate("x.parquet")], "load")
