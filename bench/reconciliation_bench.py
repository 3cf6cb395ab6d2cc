"""How long the reconciliation checks take on a large day (they must stay cheap).

Generates a day in an embedded ClickHouse entirely with INSERT ... SELECT (numbers()), then
times `reconcile()` and `node_hour_coverage()`:

    .venv/bin/python -m bench.reconciliation_bench --events 5000000 --nodes 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

from usage_etl.reconciliation.compare import Tolerances, day_window, node_hour_coverage, reconcile
from usage_etl.warehouse.client import open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

DAY = date(2026, 10, 5)

CACHE_EVENTS = """
INSERT INTO {table} (event_id, occurred_at, account_id, project_id, artifact_kind, action,
                     size_bytes)
SELECT toString(number), {{start:DateTime64(3, 'UTC')}} + toIntervalMillisecond(number % 86400000),
       concat('acct-', toString(number % {{accounts:UInt32}})),
       concat('proj-', toString(number % ({{accounts:UInt32}} * 3))),
       ['xcode', 'gradle', 'nx', 'metro', 'module', 'reapi'][1 + number % 6],
       if(number % 3 = 0, 'upload', 'download'), 1000 + cityHash64(number) % 10000000
FROM numbers({{events:UInt64}})
"""

# The nodes' view of the same traffic, spread over nodes, plus a little extra (tolerated).
USAGE_DAILY = """
INSERT INTO {usage_daily}
SELECT {{day:Date}}, account_id, project_id, 'region-1',
       concat('node-', toString(cityHash64(event_id) % {{nodes:UInt32}})) AS node_id,
       if(action = 'download', 'egress', 'ingress'), toString(action), artifact_kind,
       'public_internet', sum(size_bytes) + 1000, count()
FROM {cache_events}
GROUP BY account_id, project_id, node_id, action, artifact_kind
"""

LEDGER = """
INSERT INTO {ingest_objects}
SELECT {{day:Date}}, concat('k/', toString(number)), 'e', 1000,
       {{start:DateTime64(3, 'UTC')}} + toIntervalSecond(number % 24 * 3600 + 3900),
       concat('node-', toString(intDiv(number, 72) % {{nodes:UInt32}})), (number % 72) % 24,
       'parquet', 'loaded', '', 1, 1, 0, 'run', now64(6)
FROM numbers({{nodes:UInt32}} * 72)
"""


def generate(warehouse, events: int, accounts: int, nodes: int) -> None:
    start, _ = day_window(DAY)
    params = {"start": start, "day": DAY, "events": events, "accounts": accounts, "nodes": nodes}
    warehouse.command(CACHE_EVENTS.format(table=warehouse.table("cache_events")), params)
    warehouse.command(
        USAGE_DAILY.format(
            usage_daily=warehouse.table("usage_daily"),
            cache_events=warehouse.table("cache_events"),
        ),
        params,
    )
    warehouse.command(LEDGER.format(ingest_objects=warehouse.table("ingest_objects")), params)


def timed(label: str, fn):
    began = time.perf_counter()
    result = fn()
    print(f"{label}: {time.perf_counter() - began:.3f}s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--nodes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dsn = f"chdb://{Path(tmp) / 'engine'}"
        with open_warehouse(dsn, "bench") as warehouse:
            apply_migrations(warehouse, DdlOptions(database="bench"))
            timed("generate", lambda: generate(warehouse, args.events, args.accounts, args.nodes))
            rows = warehouse.query_one("SELECT count() FROM bench.usage_daily")
            print(f"cache events: {args.events:,}  usage_daily rows: {rows:,}")
            rec = timed(
                "reconcile", lambda: reconcile(warehouse, DAY, Tolerances(), "cache_events")
            )
            print(f"groups: {rec.groups:,}  status: {rec.status}  worst listed: {len(rec.worst)}")
            comp = timed("completeness", lambda: node_hour_coverage(warehouse, DAY))
            print(f"nodes: {comp.nodes}  missing node-hours: {comp.missing_node_hours}")


if __name__ == "__main__":
    main()
