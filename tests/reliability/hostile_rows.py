"""Hypothesis strategies for hostile rollup rows, each value tagged with the verdict the
contract gives it, and the plain-Python oracle that combines them into a row's verdict.

A verdict is None (valid) or (stage, rule). Contract §1 gives the rules; the stage orders
them the way the readers report "the first rule a row breaks": a value of the wrong JSON type
(stage TYPE, in field order) before an unparseable timestamp (TIME) before the row rules
(RULE, in RowRule order). Parquet has typed columns, so its values only ever reach RULE.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hypothesis import strategies as st

from usage_etl.rollups.schema import FIELDS, RollupKey, RowRule

KEY = RollupKey(date(2026, 10, 5), 3, "node-a", "hostile")
HOUR = KEY.hour_start
TYPE, TIME, RULE = 1, 2, 3
MISSING = object()
RULE_ORDER = list(RowRule)
TIME_ORDER = ["window_start", "emitted_at"]
EPOCH, END = datetime(1970, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC)
FIELD_RULE = {
    "schema_version": RowRule.SCHEMA_VERSION, "event_id": RowRule.EVENT_ID,
    "node_id": RowRule.NODE_ID_MISMATCH, "region": RowRule.REGION,
    "account_id": RowRule.ACCOUNT_ID, "project_id": RowRule.PROJECT_ID,
    "direction": RowRule.DIRECTION, "operation": RowRule.OPERATION,
    "artifact_kind": RowRule.ARTIFACT_KIND, "network_path": RowRule.NETWORK_PATH,
    "window_start": RowRule.WINDOW_START, "window_seconds": RowRule.WINDOW_SECONDS,
    "bytes": RowRule.BYTES, "request_count": RowRule.REQUEST_COUNT,
    "emitted_at": RowRule.EMITTED_AT,
}  # fmt: skip


@dataclass(frozen=True)
class Value:
    python: object  # what a correct reader yields (MISSING: the key is absent)
    verdict: tuple[int, RowRule] | None
    json: str | None = None  # raw JSON text when it is not json.dumps(python)


def row_verdict(row: dict[str, Value]) -> RowRule | None:
    """The contract's verdict of a whole row: the first rule it breaks, or None."""
    broken = [(v.verdict, name) for name, v in row.items() if v.verdict is not None]
    if not broken:
        return None

    def order(item):
        (stage, rule), name = item
        if stage == TYPE:
            return stage, FIELDS.index(name)
        if stage == TIME:
            return stage, TIME_ORDER.index(name)
        return stage, RULE_ORDER.index(rule)

    return min(broken, key=order)[0][1]


# -- building blocks ---------------------------------------------------------------------------

HOSTILE_TEXT = [
    "'; DROP TABLE usage_daily; --", "\\", '"', "'", "{}", "{x:String}", "{day:Date}", "%s",
    "%(x)s", "$1", "\x00", "a\nb", "\t", "\u202e", "😀", "名前", "🏳️‍🌈", " ", "NULL", "\\N",
]  # fmt: skip
any_text = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
)
# Values of other JSON types where a string belongs, as raw JSON text.
NON_STRING_JSON = ["12", "-1", "1.5", "true", "false", "[]", '["a"]', '{"a": "b"}', "{}", "NaN"]
SURROGATE_JSON = ['"\\ud800"', '"x\\udbff"']
# Tokens that are no JSON integer in [-2^63, 2^63) where an integer belongs.
NON_INT_JSON = [
    '"12"', "1.5", "1.0", "1E2", "true", "[1]", '{"a": 1}', "NaN", "Infinity", "-Infinity",
    "1e400", str(2**63), str(2**64 + 5), str(-(2**63) - 1), "null",
]  # fmt: skip


def _wrong_string_type(name: str) -> st.SearchStrategy[Value]:
    return st.sampled_from(NON_STRING_JSON + SURROGATE_JSON).map(
        lambda token: Value(None, (TYPE, FIELD_RULE[name]), token)
    )


def _absent(name: str, verdict) -> st.SearchStrategy[Value]:
    return st.sampled_from([Value(None, verdict), Value(MISSING, verdict)])


def text_field(name: str, valid) -> st.SearchStrategy[Value]:
    """Strings judged by `valid`; null/missing allowed only for the optional fields."""
    optional = name in ("project_id", "network_path")
    null = None if optional else (RULE, FIELD_RULE[name])
    strings = any_text | st.just("")
    return st.one_of(
        strings.map(lambda s: Value(s, None if valid(s) else (RULE, FIELD_RULE[name]))),
        _absent(name, null),
        _wrong_string_type(name),
    )


def int_field(name: str, valid, json_only: bool) -> st.SearchStrategy[Value]:
    ints = st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([0, 1, 2, 60, 3600, 7, -1, 2**63 - 1, -(2**63), 2**62]),
    )
    options = [
        ints.map(lambda i: Value(i, None if valid(i) else (RULE, FIELD_RULE[name]))),
        _absent(name, (RULE, FIELD_RULE[name])),
    ]
    if json_only:
        # "null" is a missing value (a RULE problem), not a wrong type.
        options.append(
            st.sampled_from(NON_INT_JSON[:-1]).map(
                lambda t: Value(None, (TYPE, FIELD_RULE[name]), t)
            )
        )
    return st.one_of(*options)


def timestamps(inside_hour: bool) -> st.SearchStrategy[datetime]:
    if inside_hour:
        return st.integers(0, 3600 * 10**6 - 1).map(lambda us: HOUR + timedelta(microseconds=us))
    return st.one_of(
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC)),
        st.sampled_from([HOUR - timedelta(microseconds=1), HOUR + timedelta(hours=1)]),
        st.sampled_from([EPOCH, END - timedelta(microseconds=1), END]),
    )


def time_field(name: str, json_only: bool) -> st.SearchStrategy[Value]:
    def judged(moment: datetime) -> Value:
        if name == "window_start":
            ok = HOUR <= moment < HOUR + timedelta(hours=1)
            return Value(moment, None if ok else (RULE, RowRule.WINDOW_OUTSIDE_HOUR))
        return Value(moment, None if EPOCH <= moment < END else (RULE, RowRule.EMITTED_AT))

    options = [
        (timestamps(True) | timestamps(False)).map(judged),
        _absent(name, (RULE, FIELD_RULE[name])),
    ]
    if json_only:
        unparseable = st.sampled_from(
            ["", "yesterday", "2026-13-01T00:00:00Z", "2026-10-05T03:00:00", "1791169200",
             "2026-10-05T03:00:00+25:00", "+275760-01-01T00:00:00Z", "\x00"]
        )  # fmt: skip
        options.append(
            unparseable.map(lambda s: Value(None, (TIME, FIELD_RULE[name]), json.dumps(s)))
        )
        options.append(_wrong_string_type(name))
    return st.one_of(*options)


def rows(json_only: bool) -> st.SearchStrategy[dict[str, Value]]:
    """One hostile row: every field independently valid or broken in some way."""
    fields = {
        "schema_version": int_field("schema_version", lambda i: i == 1, json_only),
        "event_id": text_field("event_id", lambda s: 1 <= len(s) <= 256),
        "node_id": text_field("node_id", lambda s: s == KEY.node_id),
        "region": text_field("region", lambda s: s != ""),
        "account_id": text_field("account_id", lambda s: s != ""),
        "project_id": text_field("project_id", lambda s: True),
        "direction": text_field("direction", lambda s: s in ("ingress", "egress")),
        "operation": text_field("operation", lambda s: s != ""),
        "artifact_kind": text_field("artifact_kind", lambda s: s != ""),
        "network_path": text_field(
            "network_path", lambda s: s in ("public_internet", "private_network", "unknown")
        ),
        "window_start": time_field("window_start", json_only),
        "window_seconds": int_field("window_seconds", lambda i: i > 0 and 3600 % i == 0, json_only),
        "bytes": int_field("bytes", lambda i: 0 <= i < 2**63, json_only),
        "request_count": int_field("request_count", lambda i: 0 <= i < 2**63, json_only),
        "emitted_at": time_field("emitted_at", json_only),
    }
    if not json_only:  # typed columns: no wrong JSON types, no surrogates
        fields = {k: v.filter(lambda value: value.verdict is None or value.verdict[0] == RULE)
                  for k, v in fields.items()}  # fmt: skip
    return _mostly_valid(fields)


def _mostly_valid(fields: dict[str, st.SearchStrategy[Value]]) -> st.SearchStrategy[dict]:
    """Rows with few broken fields are the interesting ones: start valid, break a few."""
    valid = {
        "schema_version": Value(1, None), "event_id": Value("e", None),
        "node_id": Value(KEY.node_id, None), "region": Value("eu", None),
        "account_id": Value("acme", None), "project_id": Value("p", None),
        "direction": Value("egress", None), "operation": Value("download", None),
        "artifact_kind": Value("xcode", None), "network_path": Value("public_internet", None),
        "window_start": Value(HOUR, None), "window_seconds": Value(3600, None),
        "bytes": Value(10, None), "request_count": Value(1, None),
        "emitted_at": Value(HOUR + timedelta(hours=1), None),
    }  # fmt: skip

    @st.composite
    def build(draw):
        row = dict(valid)
        for name in draw(st.lists(st.sampled_from(list(fields)), max_size=4, unique=True)):
            row[name] = draw(fields[name])
        return row

    return build()


# -- rendering ---------------------------------------------------------------------------------


def json_line(row: dict[str, Value], offset: str, ascii_only: bool = True) -> bytes:
    """The row as one JSON object; `ascii_only=False` writes non-ASCII text as raw UTF-8."""
    parts = []
    for name, value in row.items():
        if value.python is MISSING:
            continue
        token = value.json
        if token is None:
            token = _json_token(value.python, offset, ascii_only)
        parts.append(f"{json.dumps(name)}: {token}")
    return ("{" + ", ".join(parts) + "}").encode()


def _json_token(value: object, offset: str, ascii_only: bool = True) -> str:
    if isinstance(value, datetime):
        text = value.isoformat()
        if offset != "Z":  # the same instant written with another UTC offset
            shift = timedelta(hours=int(offset[:3]), minutes=int(offset[0] + offset[4:]))
            try:
                text = (value + shift).replace(tzinfo=None).isoformat() + offset
            except OverflowError:
                pass
        return json.dumps(text.replace("+00:00", "Z"))
    if isinstance(value, float) and not math.isfinite(value):
        raise AssertionError("non-finite values are written as raw tokens")
    return json.dumps(value, ensure_ascii=ascii_only)
