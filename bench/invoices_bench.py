"""How long monthly_invoices takes for a big month, draft and with adjustments.

Fills a month of usage_daily in an embedded ClickHouse with INSERT ... SELECT (numbers()),
finalizes the previous month, adds late usage to it, then times `run_period` (meters, tiers,
adjustments, atomic publish, checksum) and the conservation check:

    .venv/bin/python -m bench.invoices_bench --accounts 20000 --rows-per-account-day 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from usage_etl.invoicing import checks
from usage_etl.invoicing.completeness import Completeness
from usage_etl.invoicing.price_book import load_price_book
from usage_etl.invoicing.run import run_period
from usage_etl.periods import Period
from usage_etl.settings import SAMPLE_PRICE_BOOK
from usage_etl.warehouse.client import open_warehouse
from usage_etl.warehouse.migrations import DdlOptions, apply_migrations

SEP, OCT = Period.parse("2026-09"), Period.parse("2026-10")

USAGE = """
INSERT INTO {usage_daily}
SELECT {{start:Date}} + toIntervalDay(number % {{days:UInt32}}) AS day,
       concat('acct-', toString(intDiv(number, {{days:UInt32}} * {{per_day:UInt32}})
                                % {{accounts:UInt32}})),
       'proj', 'region-1', concat('node-', toString(number % 7)),
       ['egress', 'ingress'][1 + number % 2], 'download', 'xcode',
       ['public_internet', 'private_network', 'unknown'][1 + number % 3],
       cityHash64(number) % 50000000000, cityHash64(number, 1) % 2000000
FROM numbers({{rows:UInt64}})
"""


def fill(warehouse, period: Period, accounts: int, per_day: int) -> int:
    days = len(period.days)
    rows = accounts * days * per_day
    warehouse.command(
        USAGE.format(usage_daily=warehouse.table("usage_daily")),
        {"start": period.start, "days": days, "per_day": per_day, "accounts": accounts,
         "rows": rows},
    )  # fmt: skip
    return rows


def timed(label: str, fn):
    started = time.perf_counter()
    result = fn()
    print(f"{label:<48} {time.perf_counter() - started:8.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--rows-per-account-day", type=int, default=4)
    args = parser.parse_args()
    book = load_price_book(SAMPLE_PRICE_BOOK)
    complete = lambda: Completeness([])  # noqa: E731  (usage completeness is not timed here)
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_warehouse(f"chdb://{Path(tmp) / 'engine'}", "bench") as wh,
    ):
        apply_migrations(wh, DdlOptions(database="bench"))
        rows = fill(wh, SEP, args.accounts, args.rows_per_account_day)
        rows += fill(wh, OCT, args.accounts, args.rows_per_account_day)
        print(f"usage_daily rows: {rows:,}, accounts: {args.accounts:,}")
        final = timed(
            "finalize 2026-09",
            lambda: run_period(wh, book, SEP, datetime(2026, 10, 4, tzinfo=UTC), "b1", complete),
        )
        print(f"  lines: {len(final.lines):,}")
        fill(wh, SEP, args.accounts // 10, 1)  # late usage for a tenth of the accounts
        draft = timed(
            "draft 2026-10 with adjustments for 2026-09",
            lambda: run_period(wh, book, OCT, datetime(2026, 10, 20, tzinfo=UTC), "b2", complete),
        )
        print(f"  lines: {len(draft.lines):,}, adjustments: {len(draft.adjustments):,}")
        timed("check quantities_conserved 2026-09", lambda: checks.conservation(wh, SEP))
        timed("check final_lines_unchanged 2026-09", lambda: checks.final_unchanged(wh, SEP))


if __name__ == "__main__":
    main()
