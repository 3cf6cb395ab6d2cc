"""How fast `usage-etl usage` answers on a busy month (the read API, not the pipeline).

Fills usage_hourly with INSERT ... SELECT (numbers()) for `--accounts` accounts, every hour of
October 2026, `--groups` dimension groups per account-hour (spread over 48 nodes, 6 regions,
7 artifact kinds), derives usage_daily from it the way publish does, then times the whole
report (totals, previous window, zero-filled series, nodes, kinds) for a 24h, 7d and 30d range
of a large, a median and an absent account:

    .venv/bin/python -m bench.usage_read_bench --accounts 2000 --groups 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from usage_etl.rollups.schema import USAGE_DIMENSIONS
from usage_etl.usage.read_api import UsageQuery, parse_window, usage_report
from usage_etl.warehouse.client import open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

HOURS = 31 * 24
FILL = """
INSERT INTO {usage_hourly}
SELECT toDate(hour) AS day, hour, account_id, 'proj', region, node_id, direction, 'download',
       kind, 'public_internet', bytes, request_count, 1, 1, 0
FROM (
    SELECT toDateTime('2026-10-01 00:00:00', 'UTC') + toIntervalHour(number % {hours}) AS hour,
           concat('acct-', toString(intDiv(number, {hours} * {{groups:UInt32}}))) AS account_id,
           concat('node-', toString(cityHash64(number, 1) % 48)) AS node_id,
           concat('region-', toString(cityHash64(number, 1) % 48 % 6)) AS region,
           ['egress', 'ingress'][1 + number % 2] AS direction,
           ['xcode', 'gradle', 'nx', 'metro', 'module', 'reapi', 'script'][1 + number % 7] AS kind,
           cityHash64(number) % 50000000 AS bytes, cityHash64(number, 2) % 5000 AS request_count
    FROM numbers({{rows:UInt64}})
)
"""


def fill(warehouse, accounts: int, groups: int) -> int:
    rows = accounts * HOURS * groups
    warehouse.command(
        FILL.format(usage_hourly=warehouse.table("usage_hourly"), hours=HOURS),
        {"groups": groups, "rows": rows},
    )
    dims = ", ".join(USAGE_DIMENSIONS)
    warehouse.command(
        f"INSERT INTO {warehouse.table('usage_daily')} SELECT day, {dims}, sum(bytes), "
        f"sum(request_count) FROM {warehouse.table('usage_hourly')} GROUP BY day, {dims}"
    )
    return rows


def time_report(warehouse, account: str, range_: str, repeat: int) -> float:
    as_of = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    query = UsageQuery(account, parse_window(range_, as_of))
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        usage_report(warehouse, query)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=4, help="groups per account-hour")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_warehouse(f"chdb://{Path(tmp) / 'engine'}", "bench") as wh,
    ):
        apply_migrations(wh, DdlOptions(database="bench"))
        started = time.perf_counter()
        rows = fill(wh, args.accounts, args.groups)
        daily = wh.query_one(f"SELECT count() FROM {wh.table('usage_daily')}")
        print(
            f"usage_hourly rows {rows:,}, usage_daily rows {daily:,}, "
            f"filled in {time.perf_counter() - started:.1f} s"
        )
        for account in ("acct-0", f"acct-{args.accounts // 2}", "absent"):
            for range_ in ("24h", "7d", "30d"):
                seconds = time_report(wh, account, range_, args.repeat)
                print(f"{account:<12} {range_:>4}  median {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
