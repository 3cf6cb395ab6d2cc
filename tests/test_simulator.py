"""The fleet simulator: realistic output, every fault as specified, and an exact truth.

Bodies are decoded independently (pyarrow, gzip + json) and checked against contract §1 with a
small oracle here, so a fault is proven by what a reader would see, not by the simulator's tags.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pyarrow.parquet as pq
import pytest

from usage_etl.rollups.schema import (
    DIRECTIONS,
    FIELDS,
    NETWORK_PATHS,
    REQUIRED_FIELDS,
    FileRule,
    RollupKey,
    RowRule,
    classify_key,
)
from usage_etl.simulator import (
    STRAY_KINDS,
    SUPPORTED_BAD_ROW_RULES,
    Fault,
    FaultSpec,
    FleetSpec,
    SimFile,
    Simulator,
)
from usage_etl.simulator.fleet import KINDS, Fleet
from usage_etl.simulator.spec import FAULT_OPTIONS_HELP
from usage_etl.usage.dedupe import content_hash

DAY = date(2026, 10, 5)
FLEET = FleetSpec(nodes=6, accounts=30, rows_per_day=4000, seed=11)
NODE_IDS = Fleet(FLEET).node_ids
HEAVY = FaultSpec(
    redelivery_rate=0.1,
    correction_rate=0.03,
    conflict_rate=0.005,
    late_rate=0.05,
    late_hours=(5,),
    truncated_rate=0.05,
    missing_column_rate=0.05,
    bad_row_rate=0.03,
    bad_row_rules=SUPPORTED_BAD_ROW_RULES,
    stray_rate=0.3,
    silent_node_hours=((NODE_IDS[1], 7),),
    under_reporting_nodes=(NODE_IDS[2],),
    cache_event_drop_rate=0.1,
)


@pytest.fixture(scope="module")
def clean():
    return Simulator(FLEET, FaultSpec.none()).generate_day(DAY)


@pytest.fixture(scope="module")
def heavy():
    return Simulator(FLEET, HEAVY).generate_day(DAY)


def day_with(**faults):
    return Simulator(FLEET, FaultSpec(**faults)).generate_day(DAY)


# -- an independent reader and contract §1 oracle ----------------------------------------------


INVALID = "__invalid_json__"


def parse_line(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {INVALID: True}


def read_body(f: SimFile) -> pl.DataFrame:
    """Decode a body the way a reader would (raises on unreadable bodies); an NDJSON line that
    is not JSON becomes a row with only INVALID set."""
    if f.format == "parquet":
        return pl.from_arrow(pq.read_table(io.BytesIO(f.body)))
    lines = gzip.decompress(f.body).decode().splitlines()
    frame = pl.DataFrame([parse_line(line) for line in lines], infer_schema_length=None)
    return frame.drop(INVALID, strict=False)


def read_dicts(f: SimFile) -> list[dict]:
    if f.format == "parquet":
        return read_body(f).to_dicts()
    return [parse_line(line) for line in gzip.decompress(f.body).decode().splitlines()]


def as_utc(value) -> datetime:
    if isinstance(value, str):
        assert value.endswith("Z"), value
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_counter(value) -> bool:
    return isinstance(value, int) and 0 <= value < 2**63


def broken_rules(row: dict, key: RollupKey) -> list[str]:
    """Every contract §1 rule a decoded row breaks, in RowRule order."""
    if row.get(INVALID):
        return ["invalid_json"]
    get = row.get
    start = as_utc(get("window_start")) if get("window_start") is not None else None
    checks = {
        "schema_version": get("schema_version") == 1,
        "event_id": isinstance(get("event_id"), str) and 1 <= len(get("event_id")) <= 256,
        "node_id_mismatch": get("node_id") == key.node_id,
        "region": bool(get("region")),
        "account_id": bool(get("account_id")),
        "project_id": get("project_id") is None or isinstance(get("project_id"), str),
        "direction": get("direction") in DIRECTIONS,
        "operation": bool(get("operation")),
        "artifact_kind": bool(get("artifact_kind")),
        "network_path": (get("network_path") or "unknown") in NETWORK_PATHS,
        "window_start": start is not None,
        "window_outside_hour": start is None or key.hour_start <= start < key.hour_end,
        "window_seconds": get("window_seconds", 0) > 0 and 3600 % get("window_seconds") == 0,
        "bytes": is_counter(get("bytes")),
        "request_count": is_counter(get("request_count")),
        "emitted_at": get("emitted_at") is not None,
    }
    assert list(checks) == [r for r in RowRule if r in checks]
    return [rule for rule, ok in checks.items() if not ok]


def total(frame: pl.DataFrame, column: str = "bytes") -> int:
    return int(frame[column].sum() or 0)


def rollups(files: list[SimFile]) -> list[SimFile]:
    return [f for f in files if f.rows is not None]


# -- determinism and realism -------------------------------------------------------------------


def test_same_spec_and_seed_give_the_same_day():
    spec = replace(FLEET, nodes=2, rows_per_day=500)
    a = Simulator(spec, HEAVY).generate_day(DAY)
    b = Simulator(spec, HEAVY).generate_day(DAY)
    assert [(f.key, f.body) for f in a.files] == [(f.key, f.body) for f in b.files]
    assert a.cache_events.equals(b.cache_events)
    other = Simulator(replace(spec, seed=spec.seed + 1), HEAVY).generate_day(DAY)
    assert {f.key for f in other.files}.isdisjoint({f.key for f in a.files})


def test_fleet_looks_like_a_real_fleet(clean):
    rows = pl.concat([f.valid_rows for f in clean.files])
    assert rows.height == FLEET.rows_per_day
    per_account = rows.group_by("account_id").agg(pl.col("bytes").sum()).sort("bytes")
    assert "acme" in per_account["account_id"].to_list()
    assert per_account["bytes"][-1] > 5 * per_account["bytes"].median()  # Zipf-like sizes
    scripts = rows.filter(pl.col("artifact_kind") == "script")
    assert scripts.height and scripts["project_id"].null_count() == scripts.height
    assert rows.filter(pl.col("project_id").is_not_null()).height > rows.height / 2
    assert set(rows["artifact_kind"]) == set(KINDS)
    egress = total(rows.filter(pl.col("direction") == "egress"))
    assert egress > 5 * total(rows.filter(pl.col("direction") == "ingress"))
    exists = rows.filter(pl.col("operation") == "exists")
    assert exists.height and total(exists) == 0 and exists["request_count"].min() > 0
    private = rows.filter(pl.col("network_path") == "private_network").height / rows.height
    assert 0.03 < private < 0.2
    assert set(rows["window_seconds"]) == {60, 600, 3600}
    per_hour = rows.group_by(pl.col("window_start").dt.hour()).len()["len"]
    assert per_hour.max() > 1.3 * per_hour.min()  # diurnal
    assert rows["event_id"].n_unique() == rows.height
    assert set(rows["event_id"].str.len_chars()) == {32}
    assert {f.format for f in clean.files} == {"parquet", "ndjson.gz"}


def test_short_window_nodes_put_several_windows_in_one_file(clean):
    for f in rollups(clean.files):
        windows = f.rows["window_start"].n_unique()
        if f.rows["window_seconds"][0] == 3600:
            assert windows == 1
        elif f.rows.height > 20:
            assert windows > 1


def test_event_id_identifies_the_cell_whatever_the_faults(clean, heavy):
    cell = ["node_id", "window_start", "account_id", "project_id", "direction", "operation"]
    cell += ["artifact_kind", "network_path"]
    a = pl.concat([f.valid_rows for f in clean.files]).select(*cell, "event_id")
    b = pl.concat([f.valid_rows for f in heavy.files if f.readable]).select(*cell, "event_id")
    joined = b.unique().join(a, on=cell, how="inner", nulls_equal=True)
    assert joined.height > 0.9 * a.height
    assert (joined["event_id"] == joined["event_id_right"]).all()


# -- bodies ------------------------------------------------------------------------------------


def test_bodies_hold_exactly_the_rows_they_claim(heavy):
    readable = [f for f in heavy.files if f.readable]
    assert {f.format for f in readable} == {"parquet", "ndjson.gz"}
    for f in readable:
        garbled = f.rows["rule"] == "invalid_json"
        decoded = read_body(f).filter(~garbled.fill_null(False))
        expected = f.rows.filter(~garbled.fill_null(False))
        assert tuple(decoded.columns) == f.columns
        assert decoded.height == expected.height
        for column in ("bytes", "event_id", "account_id", "project_id"):
            if column in f.columns:  # a missing-column NDJSON file lacks one
                assert decoded[column].to_list() == expected[column].to_list()
        for column in ("window_start", "emitted_at"):
            if column in f.columns:
                stamps = [as_utc(v) for v in decoded[column].to_list()]
                assert stamps == expected[column].to_list()


def test_parquet_types_and_ndjson_encoding(clean):
    parquet = next(f for f in clean.files if f.format == "parquet")
    schema = pq.read_schema(io.BytesIO(parquet.body))
    assert str(schema.field("bytes").type) == "int64"
    assert str(schema.field("window_start").type).startswith("timestamp[us")
    assert schema.field("project_id").nullable
    ndjson = next(f for f in clean.files if f.format == "ndjson.gz")
    objects = [json.loads(x) for x in gzip.decompress(ndjson.body).decode().splitlines()]
    assert all(o["emitted_at"].endswith("Z") for o in objects)
    assert any(o["project_id"] is None for o in objects)


def test_some_nodes_omit_network_path_and_mean_unknown(clean):
    omitted = [f for f in rollups(clean.files) if "network_path" not in f.columns]
    assert omitted and len(omitted) < len(clean.files)
    for f in omitted:
        assert "network_path" not in read_body(f).columns
        assert set(f.rows["network_path"]) == {"unknown"}


def test_names_look_like_a_nodes_and_parse_as_rollup_keys(clean):
    for f in clean.files:
        parsed = classify_key("", f.key, len(f.body))
        assert isinstance(parsed, RollupKey)
        assert (parsed.day, parsed.hour, parsed.node_id) == (f.day, f.hour, f.node_id)
        assert parsed.name.startswith(f"{f.node_id}-{f.day:%Y%m%d}T{f.hour:02d}-")


# -- faults ------------------------------------------------------------------------------------


def test_bad_rows_break_exactly_the_rule_they_are_tagged_with(heavy):
    seen: Counter[str] = Counter()
    for f in heavy.files:
        if not f.readable:
            continue
        key = classify_key("", f.key, len(f.body))
        missing = Fault.MISSING_COLUMN in f.faults  # NDJSON: lines lack a field
        for row, tag in zip(read_dicts(f), f.rows["rule"].to_list(), strict=True):
            broken = broken_rules(row, key)
            assert broken[:1] == ([tag] if tag else [])  # reported under the first rule
            assert len(broken) <= (2 if missing else 1)  # a fault breaks exactly one rule
            seen[tag] += tag is not None
    seen = Counter({rule: n for rule, n in seen.items() if n})
    assert set(seen) >= set(SUPPORTED_BAD_ROW_RULES)
    expected = heavy.expected_quarantine(heavy.files)
    assert {rule: expected[rule] for rule in seen} == dict(seen)


def test_truncated_and_missing_column_files_are_unreadable_as_described(heavy):
    truncated = heavy.with_fault(Fault.TRUNCATED)
    missing = heavy.with_fault(Fault.MISSING_COLUMN)
    assert {f.format for f in truncated} == {"parquet", "ndjson.gz"}
    for f in truncated:
        with pytest.raises(Exception):  # noqa: B017 - any reader error is the point
            read_body(f)
        assert f.file_rule == FileRule.UNREADABLE
    assert {f.format for f in missing} == {"parquet", "ndjson.gz"}
    for f in missing:
        absent = set(REQUIRED_FIELDS) - set(read_body(f).columns)
        assert len(absent) == 1
        if f.format == "parquet":  # the schema lacks it: the whole file is quarantined
            assert f.file_rule == FileRule.MISSING_COLUMNS
        else:  # NDJSON has no schema: every line breaks the field's rule (or an earlier one)
            assert f.file_rule is None and f.valid_rows.height == 0
            # Those five rules are named after their fields.
            assert Counter(f.rows["rule"]).most_common(1)[0][0] == absent.pop()
    counts = heavy.expected_quarantine(heavy.files)
    assert counts[FileRule.UNREADABLE] == len(truncated)
    assert counts[FileRule.MISSING_COLUMNS] == len([f for f in missing if f.format == "parquet"])


def test_a_broken_files_rows_count_only_through_a_good_copy(clean):
    node = NODE_IDS[0]
    broken = [(node, h) for h in range(3, 9)]
    none = day_with(
        truncated_node_hours=broken[:3], missing_column_node_hours=broken[3:], good_copy_rate=0
    )
    lost = [f for f in none.files if f.file_rule]
    assert len(lost) == len(broken) and not none.with_fault(Fault.GOOD_COPY)
    lost_bytes = sum(total(f.rows) for f in lost)
    assert lost_bytes > 0
    assert total(none.expected_usage_daily()) == total(clean.expected_usage_daily()) - lost_bytes
    copied = day_with(
        truncated_node_hours=broken[:3], missing_column_node_hours=broken[3:], good_copy_rate=1
    )
    assert len(copied.with_fault(Fault.GOOD_COPY)) == len(broken)
    assert copied.expected_usage_daily().equals(clean.expected_usage_daily())


def test_redelivered_copies_are_identical_under_new_names_and_count_once(clean):
    day = day_with(redelivery_rate=0.5)
    copies = day.with_fault(Fault.REDELIVERY)
    assert copies
    by_key = {f.key: f for f in day.files}
    for copy in copies:
        original = by_key[copy.copy_of]
        assert copy.key != original.key and copy.body == original.body
    assert day.expected_usage_daily().equals(clean.expected_usage_daily())


def test_corrections_win_even_when_uploaded_before_the_original(clean):
    day = day_with(correction_rate=0.1, correction_first_rate=1.0)
    corrections = day.with_fault(Fault.CORRECTION)
    assert corrections
    for c in corrections:
        unit = [f for f in day.files if (f.node_id, f.hour) == (c.node_id, c.hour)]
        originals = [f for f in unit if Fault.CORRECTED in f.faults]
        assert unit[0] is c and all(c.key < o.key for o in originals)  # first in order and name
        old = pl.concat([o.rows for o in originals]).join(c.rows, on="event_id", how="inner")
        assert old.height == c.rows.height
        assert (old["emitted_at_right"] > old["emitted_at"]).all()
        assert (old["request_count_right"] != old["request_count"]).all()
    # Final values are the true ones: the truth equals the clean fleet's...
    assert day.expected_usage_daily().equals(clean.expected_usage_daily())
    # ...and without the corrections the preliminary (smaller) versions count.
    without = [f for f in day.files if Fault.CORRECTION not in f.faults]
    fewer = day.expected_usage_daily(without)
    assert total(fewer, "request_count") < total(clean.expected_usage_daily(), "request_count")


def test_conflicts_are_off_by_default_and_named_when_injected(clean, heavy):
    assert not clean.conflicting_event_ids() and not clean.with_fault(Fault.CONFLICT)
    day = day_with(conflict_rate=0.05)
    twins = pl.concat([f.rows for f in day.with_fault(Fault.CONFLICT)])
    assert day.conflicting_event_ids() == set(twins["event_id"])
    # Ties resolve to the greater content hash, as in the pipeline (usage/dedupe.py): the
    # twin (which carries more bytes) wins some conflicts and loses others.
    originals = {
        row["event_id"]: row
        for row in pl.concat([f.valid_rows for f in clean.files])
        .filter(pl.col("event_id").is_in(twins["event_id"].implode()))
        .iter_rows(named=True)
    }
    extra = 0
    for twin in twins.iter_rows(named=True):
        original = originals[twin["event_id"]]
        extra += max(original, twin, key=content_hash)["bytes"] - original["bytes"]
    assert 0 < extra < total(twins) - sum(r["bytes"] for r in originals.values())
    assert total(day.expected_usage_daily()) == total(clean.expected_usage_daily()) + extra


def test_late_files_are_flagged_held_back_and_counted_only_when_included(clean):
    day = day_with(late_hours=(5,), late_node_hours=((NODE_IDS[3], 9),))
    late = day.late_files
    assert {f.hour for f in late} == {5, 9}
    assert all(f.hour == 5 or f.node_id == NODE_IDS[3] for f in late)
    assert all(
        f.arrives_at >= datetime(2026, 10, 5, f.hour + 1, tzinfo=UTC) + timedelta(days=2)
        for f in late
    )
    assert all(Fault.LATE in f.faults for f in late)
    late_bytes = sum(total(f.rows) for f in late)
    on_time = day.expected_usage_daily()
    assert total(on_time) == total(clean.expected_usage_daily()) - late_bytes
    assert day.expected_usage_daily(day.files).equals(clean.expected_usage_daily())


def test_stray_objects_are_ignored_for_the_reason_given(heavy):
    strays = heavy.with_fault(Fault.STRAY)
    kinds = {f.key.rsplit("/", 1)[-1] for f in strays}
    assert "_SUCCESS" in kinds and any(k.endswith(".csv") for k in kinds)
    assert any(k.endswith(".tmp") for k in kinds) and any("/_tmp/" in f.key for f in strays)
    for f in strays:
        assert classify_key("", f.key, len(f.body)) == f.ignore_reason
    assert sum(heavy.expected_ignored(heavy.files).values()) == len(strays)
    assert len(STRAY_KINDS) == 4


def test_silent_node_delivers_nothing_but_its_traffic_reaches_the_application(clean, heavy):
    node, hour = HEAVY.silent_node_hours[0]
    assert (node, hour) in heavy.silent_node_hours
    assert not [f for f in heavy.files if (f.node_id, f.hour) == (node, hour)]
    assert [f for f in clean.files if (f.node_id, f.hour) == (node, hour)]
    silent = day_with(silent_node_hours=((node, hour),))
    assert silent.cache_events.equals(clean.cache_events)
    assert total(silent.expected_usage_daily()) < total(clean.expected_usage_daily())


def reconcile(day) -> pl.DataFrame:
    """Rollup bytes vs cache-event bytes per (day, account, project, kind, action)."""
    keys = ["day", "account_id", "project_id", "artifact_kind", "action"]
    usage = (
        day.expected_usage_daily(day.files)
        .filter(pl.col("project_id") != "")
        .with_columns(
            action=pl.when(pl.col("operation") == "download")
            .then(pl.lit("download"))
            .when(pl.col("operation") == "upload")
            .then(pl.lit("upload"))
        )
        .filter(pl.col("action").is_not_null())
        .group_by(keys)
        .agg(rollup=pl.col("bytes").sum().cast(pl.Int64))
    )
    events = (
        pl.from_arrow(day.cache_events)
        .with_columns(day=pl.col("occurred_at").dt.date())
        .group_by(keys)
        .agg(events=pl.col("size_bytes").sum().cast(pl.Int64))
    )
    return usage.join(events, on=keys, how="full", coalesce=True).fill_null(0)


def test_cache_events_match_the_rollups_exactly_on_a_clean_fleet(clean):
    joined = reconcile(clean)
    assert joined.height > 50
    assert (joined["rollup"] == joined["events"]).all()
    events = clean.cache_events
    assert events.column("event_id").to_pylist() and len(set(events["event_id"].to_pylist())) == (
        events.num_rows
    )
    assert events.num_rows > joined.height  # cells split into several events
    assert set(events.column("action").to_pylist()) == {"download", "upload"}


def test_under_reporting_node_shows_up_in_reconciliation_only():
    day = day_with(under_reporting_nodes=(NODE_IDS[2],), under_report_factor=0.5)
    joined = reconcile(day)
    assert (joined["rollup"] <= joined["events"]).all()
    assert (joined["rollup"] < joined["events"]).sum() > 10
    assert all(
        Fault.UNDER_REPORTING in f.faults for f in rollups(day.files) if f.node_id == NODE_IDS[2]
    )


def test_cache_event_drop_rate_loses_that_share(clean):
    lossy = day_with(cache_event_drop_rate=0.25)
    dropped = lossy.cache_events
    assert 0.7 < dropped.num_rows / clean.cache_events.num_rows < 0.8
    assert set(dropped["event_id"].to_pylist()) <= set(clean.cache_events["event_id"].to_pylist())
    assert lossy.expected_usage_daily().equals(clean.expected_usage_daily())  # rollups intact
    joined = reconcile(lossy)
    assert (joined["rollup"] >= joined["events"]).all()
    assert (joined["rollup"] > joined["events"]).sum() > joined.height / 2


# -- truth -------------------------------------------------------------------------------------


def test_truth_has_exactly_the_contract_columns(heavy):
    truth = heavy.expected_usage_daily()
    assert truth.columns == [
        "day", "account_id", "project_id", "region", "node_id", "direction", "operation",
        "artifact_kind", "network_path", "bytes", "request_count",
    ]  # fmt: skip
    assert truth["day"].unique().to_list() == [DAY]
    assert truth.filter(pl.col("project_id").is_null()).height == 0
    keys = truth.columns[:9]
    assert truth.select(keys).is_unique().all()


def test_streaming_gives_the_same_truth_as_a_whole_day(heavy):
    sim = Simulator(FLEET, HEAVY)
    delivered: list[SimFile] = []
    result = sim.stream_day(DAY, on_unit=delivered.extend, workers=2)
    assert [f.key for f in delivered] == [f.key for f in heavy.on_time_files]
    assert result.expected_usage_daily().equals(heavy.expected_usage_daily())
    assert result.expected_usage_daily(include_late=True).equals(
        heavy.expected_usage_daily(heavy.files)
    )
    assert dict(result.quarantine_on_time) == heavy.expected_quarantine()
    assert dict(result.quarantine_all) == heavy.expected_quarantine(heavy.files)
    assert result.conflicts == heavy.conflicting_event_ids(heavy.files)
    assert result.cache_events == heavy.cache_events.num_rows


def test_expected_objects_cover_every_file(heavy):
    objects = heavy.expected_objects(heavy.files)
    assert objects.height == len(heavy.files)
    status = Counter(objects["status"])
    assert status["ignored"] == len(heavy.with_fault(Fault.STRAY))
    assert status["quarantined"] == len([f for f in heavy.files if f.file_rule])


def test_generate_range_includes_both_ends():
    sim = Simulator(replace(FLEET, nodes=1, rows_per_day=100))
    days = sim.generate_range(date(2026, 10, 30), date(2026, 11, 1))
    assert [d.day for d in days] == [date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1)]
    assert all(d.expected_usage_daily()["day"].unique().to_list() == [d.day] for d in days)


def test_fault_spec_parses_presets_and_overrides():
    spec = FaultSpec.parse(
        "default,late_hours=3;4,truncated_node_hours=a@3;b@4,late_delay=6,bad_row_rules=bytes"
    )
    assert spec.redelivery_rate == FaultSpec.default().redelivery_rate
    assert spec.late_hours == (3, 4) and spec.late_delay == timedelta(hours=6)
    assert spec.truncated_node_hours == (("a", 3), ("b", 4)) and spec.bad_row_rules == ("bytes",)
    assert FaultSpec.parse("none") == FaultSpec()
    with pytest.raises(ValueError, match="unknown fault option"):
        FaultSpec.parse("default,nonsense=1")
    with pytest.raises(ValueError, match="cannot inject"):
        FaultSpec.parse("bad_row_rules=tenant_mismatch")
    assert set(FAULT_OPTIONS_HELP) == set(FaultSpec.field_names())
    assert set(FIELDS) >= set(REQUIRED_FIELDS)
