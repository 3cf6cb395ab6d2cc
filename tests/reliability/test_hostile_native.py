"""Hostile NDJSON.gz rows against ClickHouse's own reading of S3 (usage/native.py).

The native path may decide a file only when the contract oracle finds every row valid, and then
must stage exactly the values written. It must also take every file of the plain shape it
promises to read (no escapes, integers of at most 18 digits, UTC written `Z` or `+00:00`), so
the property fails both for a path that lets a bad row through and for one that hands back
everything. Files it hands back are judged by Python, which test_hostile_files.py covers.
"""

from __future__ import annotations

import gzip
import itertools
import re
from dataclasses import replace
from datetime import datetime

import pytest
from hostile_rows import EPOCH, KEY, MISSING, Value, json_line, row_verdict, rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_files import Landing

from usage_etl.usage import native

CI_EXAMPLES = 25
SOAK_EXAMPLES = 600
PLAIN_OFFSETS = ("Z", "+00:00")
_PLAIN_TEXT = re.compile(r'^[^"\\\x00-\x1f]*$')
_examples = itertools.count()


def _plain_value(value: Value) -> bool:
    """Would this value be written in the shape the native path reads?"""
    if value.json is not None:  # raw tokens: wrong types, unparseable timestamps
        return False
    v = value.python
    if v is MISSING or v is None or isinstance(v, datetime):
        return True
    if isinstance(v, int):
        return abs(v) < 10**18
    return isinstance(v, str) and bool(_PLAIN_TEXT.match(v)) and "\u2028" not in v


def natively_readable(hostile: list[dict[str, Value]], offset: str, ascii_only: bool) -> bool:
    plain = all(_plain_value(v) for row in hostile for v in row.values())
    ascii_text = all(
        isinstance(v.python, str) is False or v.python.isascii()
        for row in hostile for v in row.values()
    )  # fmt: skip
    valid = all(row_verdict(row) is None for row in hostile)
    # native.py's condition is stricter at one bound: `emitted_at > epoch` (validate.py has >=),
    # so a file with an emitted_at of exactly 1970-01-01T00:00:00Z goes to Python.
    at_epoch = any(row["emitted_at"].python == EPOCH for row in hostile)
    return (
        valid and plain and not at_epoch and offset in PLAIN_OFFSETS
        and (ascii_text or not ascii_only)
    )  # fmt: skip


files = st.tuples(
    st.lists(rows(json_only=True), min_size=1, max_size=4),
    st.sampled_from(["Z", "+00:00", "+05:30"]),
    st.booleans(),
)


def native_property(examples: int):
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
        ],
    )  # fmt: skip
    @given(batch=st.lists(files, min_size=1, max_size=4))
    def check(s3_server, settings, warehouse, batch):
        landing = Landing(s3_server, settings)
        example = next(_examples)
        candidates = []
        for i, (hostile, offset, ascii_only) in enumerate(batch):
            lines = [json_line(row, offset, ascii_only) for row in hostile]
            body = gzip.compress(b"\n".join(lines) + b"\n")
            name = f"ex{example}-{i}.ndjson.gz"
            key = landing.put(name, body)
            etag = landing.client.head_object(Bucket=landing.bucket, Key=key)["ETag"].strip('"')
            rollup_key = replace(KEY, name=name)  # its suffix names its format
            candidates.append(native.Candidate(key, etag, rollup_key, None, len(body)))

        access = native.s3_access_from_client(landing.client)
        load_id = f"ex{example}"
        result = native.load_objects(
            warehouse, access, landing.bucket, KEY.day, candidates, load_id
        )

        for candidate, (hostile, offset, ascii_only) in zip(candidates, batch, strict=True):
            decided = candidate.key in result.loaded
            assert decided == natively_readable(hostile, offset, ascii_only), (
                candidate.key, result.reasons.get(candidate.key),
            )  # fmt: skip
            if decided:
                _assert_staged_literally(
                    warehouse, result.loaded[candidate.key], candidate, hostile
                )

    return check


def _assert_staged_literally(warehouse, loaded, candidate, hostile) -> None:
    staged = warehouse.query_rows(
        f"""SELECT source_row, event_id, node_id, region, account_id, project_id, direction,
                   operation, artifact_kind, network_path, window_start, window_seconds, bytes,
                   request_count, emitted_at
            FROM {warehouse.table("rollup_rows")}
            WHERE day = {{day:Date}} AND run_id = {{run:String}} AND source_key = {{key:String}}
            ORDER BY source_row""",
        {"day": KEY.day, "run": loaded.load_id, "key": candidate.key},
    )
    assert [r[0] for r in staged] == list(range(1, len(hostile) + 1))
    for record, row in zip(staged, hostile, strict=True):
        written = {name: value.python for name, value in row.items()}
        defaults = {"project_id": "", "network_path": "unknown"}
        for name in defaults:
            if written[name] in (None, MISSING):
                written[name] = defaults[name]
        names = ("event_id", "node_id", "region", "account_id", "project_id", "direction",
                 "operation", "artifact_kind", "network_path", "window_start", "window_seconds",
                 "bytes", "request_count", "emitted_at")  # fmt: skip
        got = dict(zip(names, record[1:], strict=True))
        for name in ("window_start", "emitted_at"):
            got[name] = got[name].replace(tzinfo=written[name].tzinfo)
        assert got == {name: written[name] for name in names}


test_native_ndjson_decides_only_valid_files_and_stages_them_literally = native_property(CI_EXAMPLES)
test_native_ndjson_soak = pytest.mark.slow(native_property(SOAK_EXAMPLES))
