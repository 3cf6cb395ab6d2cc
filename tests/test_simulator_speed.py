"""The simulator's fast paths give the same objects and truth as the plain ones: threaded
uploads, days without cache events, and the backfill benchmark's kept data folder."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, timedelta

import pytest

from bench.backfill_bench import DataMismatch, check_data, data_manifest
from usage_etl.simulator import FaultSpec, FleetSpec, SimFile, Simulator

DAY = date(2026, 10, 5)
FLEET = FleetSpec(nodes=3, accounts=10, rows_per_day=600, seed=5)
FAULTS = FaultSpec.parse("default,late_hours=2,stray_rate=0.2,redelivery_rate=0.2")


def _objects(s3, bucket: str, prefix: str) -> dict[str, str]:
    """key below prefix -> ETag (the body's MD5 for these single-part PUTs)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return {
        o["Key"][len(prefix) + 1 :]: o["ETag"] for page in pages for o in page.get("Contents", [])
    }


def test_threaded_upload_lands_the_same_objects(s3_server, settings):
    day = Simulator(FLEET, FAULTS).generate_day(DAY)
    # A key PUT twice: the later body must win, as in list order.
    twice = dataclasses.replace(day.files[0], body=b"second body")
    files = [*day.files, twice]
    s3, bucket = s3_server.client(), settings.landing_bucket
    root = settings.landing_prefix
    sent_plain = Simulator.upload(files, s3, bucket, f"{root}/plain", include_late=True)
    sent_fast = Simulator.upload(files, s3, bucket, f"{root}/fast", include_late=True, workers=8)
    assert sent_plain == sent_fast == len(files)
    plain = _objects(s3, bucket, f"{root}/plain")
    assert plain == _objects(s3, bucket, f"{root}/fast")
    assert len(plain) == len(day.files)
    got = s3.get_object(Bucket=bucket, Key=f"{root}/fast/{twice.key}")["Body"].read()
    assert got == b"second body"


def test_a_day_without_cache_events_has_the_same_files_and_truth():
    sim = Simulator(FLEET, FAULTS)
    full, lean = sim.generate_day(DAY), sim.generate_day(DAY, cache_events=False)
    assert full.cache_events.num_rows > 0 and lean.cache_events.num_rows == 0

    def shape(files: list[SimFile]) -> list[tuple]:
        return [(f.key, f.body, f.is_late, f.faults) for f in files]

    assert shape(full.files) == shape(lean.files)
    assert full.expected_usage_daily(full.files).equals(lean.expected_usage_daily(lean.files))


def _keep(folder, days, rows=20_000, seed=7) -> dict:
    manifest = data_manifest(days, rows, seed)
    (folder / "truth").mkdir(parents=True)
    for day in days:
        (folder / "truth" / f"{day}.parquet").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({**manifest, "simulated_s": 1.0}))
    return manifest


def test_kept_data_is_reused_only_with_the_same_days_rows_and_seed(tmp_path):
    october = [date(2026, 10, 1) + timedelta(days=i) for i in range(31)]
    folder = tmp_path / "kept"
    assert check_data(folder, data_manifest(october, 20_000, 7)) is False  # missing: simulate
    folder.mkdir()
    assert check_data(folder, data_manifest(october, 20_000, 7)) is False  # empty: simulate
    _keep(folder, october)
    assert check_data(folder, data_manifest(october, 20_000, 7)) is True
    for days, rows, seed, named in [
        (october[:30], 20_000, 7, "days: kept 31, asked 30"),
        (october[1:], 20_000, 7, "first: kept '2026-10-01', asked '2026-10-02'"),
        (october, 2_000, 7, "rows_per_day: kept 20000, asked 2000"),
        (october, 20_000, 8, "seed: kept 7, asked 8"),
    ]:
        with pytest.raises(DataMismatch, match=named):
            check_data(folder, data_manifest(days, rows, seed))


def test_kept_data_without_a_manifest_or_a_day_is_refused(tmp_path):
    days = [date(2026, 10, 1), date(2026, 10, 2)]
    unfinished = tmp_path / "unfinished"
    (unfinished / "seaweedfs").mkdir(parents=True)  # a simulation that stopped midway
    with pytest.raises(DataMismatch, match=re.escape("no manifest.json")):
        check_data(unfinished, data_manifest(days, 20_000, 7))
    lacking = tmp_path / "lacking"
    _keep(lacking, days)
    (lacking / "truth" / "2026-10-02.parquet").unlink()
    with pytest.raises(DataMismatch, match="lacks the truth of 1 days"):
        check_data(lacking, data_manifest(days, 20_000, 7))
