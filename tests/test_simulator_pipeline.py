"""The simulator's truth against the real ingestion: every fault on SeaweedFS and chDB.

If the two disagree, either the simulator or the pipeline misreads contract §1; this is the
end-to-end proof that "the truth is right" in the only sense that matters.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import polars as pl
import pytest

from usage_etl.landing import Landing
from usage_etl.simulator import SUPPORTED_BAD_ROW_RULES, FaultSpec, FleetSpec, Simulator
from usage_etl.simulator.fleet import Fleet
from usage_etl.simulator.truth import USAGE_SCHEMA

ingest = pytest.importorskip("usage_etl.usage.load")
publish = pytest.importorskip("usage_etl.usage.publish")

DAY = date(2026, 10, 5)
FLEET = FleetSpec(nodes=5, accounts=20, rows_per_day=2500, seed=23)
NODES = Fleet(FLEET).node_ids
FAULTS = FaultSpec(
    redelivery_rate=0.1,
    correction_rate=0.05,
    correction_first_rate=0.5,
    late_rate=0.05,
    late_hours=(4,),
    truncated_rate=0.05,
    missing_column_rate=0.05,
    bad_row_rate=0.02,
    bad_row_rules=SUPPORTED_BAD_ROW_RULES,
    stray_rate=0.3,
    silent_node_hours=((NODES[0], 9),),
    under_reporting_nodes=(NODES[1],),
)


def usage_daily(warehouse) -> pl.DataFrame:
    columns = list(USAGE_SCHEMA)
    rows = warehouse.query_rows(
        f"SELECT {', '.join(columns)} FROM {warehouse.table('usage_daily')} "
        "WHERE day = {day:Date}",
        {"day": DAY},
    )
    return pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row").sort(columns[:9])


def run(warehouse, s3, settings, load_id: str):
    landing = Landing(s3, settings.landing_bucket, settings.landing_prefix)
    report = ingest.ingest_day(warehouse, landing, DAY, load_id)
    publish.publish_day(warehouse, DAY, load_id)
    return report


def test_pipeline_matches_the_truth_on_time_and_after_late_files(warehouse, s3_server, settings):
    day = Simulator(FLEET, FAULTS).generate_day(DAY)
    s3 = s3_server.client()
    Simulator.upload(day.files, s3, settings.landing_bucket, settings.landing_prefix)
    report = run(warehouse, s3, settings, "first")
    assert usage_daily(warehouse).equals(day.expected_usage_daily())
    assert dict(report.quarantined_by_rule) == day.expected_quarantine()
    ignored = Counter(reason for _, reason in report.ignored_objects)
    assert dict(ignored) == day.expected_ignored()

    Simulator.upload(
        day.late_files, s3, settings.landing_bucket, settings.landing_prefix, include_late=True
    )
    run(warehouse, s3, settings, "second")
    assert usage_daily(warehouse).equals(day.expected_usage_daily(day.files))
