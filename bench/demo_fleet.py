"""The demo fleet's days landed in a SeaweedFS, for the in-process benchmarks."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from usage_etl.simulator import FaultSpec, FleetSpec, Simulator


def land_demo_days(s3, work: Path, bucket: str, prefix: str, days: list[date], rows: int):
    """Point this process at `s3` and a fresh embedded engine under `work` (the settings a run
    reads), then land the demo fleet's days (8 nodes, 40 accounts, the demo's faults) under
    `prefix`. Returns the S3 client."""
    s3.ensure_bucket(bucket)
    os.environ.update(s3.env())
    os.environ["USAGE_ETL_CLICKHOUSE_DSN"] = f"chdb://{work / 'engine'}"
    os.environ["USAGE_ETL_DATABASE"] = "usage"
    os.environ["USAGE_ETL_LANDING_URL"] = f"s3://{bucket}/{prefix}"
    for key in ("USAGE_ETL_AS_OF", "USAGE_ETL_NODE_REGISTRY"):
        os.environ.pop(key, None)
    sim = Simulator(FleetSpec(nodes=8, accounts=40, rows_per_day=rows, seed=7), FaultSpec.default())
    client = s3.client()
    for day in days:
        sim.upload(sim.generate_day(day).files, client, bucket, prefix)
    return client
