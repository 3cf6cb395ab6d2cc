"""An operator's backfill in the browser: headless Chromium (Debian's package, driven by
Playwright, no browser download) finds the daily asset, follows it to its job, selects two days
in the partition dialog and launches the backfill; the runs complete and usage lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backfill import backfill_ids, tags_of, wait_for_backfill_runs
from e2e_stack import stack_settings, stack_warehouse
from rollup_files import Landing, parquet_bytes, rollup, usage_rows

# One worker runs every e2e test: they share one webserver + daemon (tests/e2e/conftest.py).
pytestmark = pytest.mark.xdist_group("dagster_stack")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Inside the dialog's default 90-day range, outside the late-file sensor's 35-day look-back.
DAYS = [datetime.now(UTC).date() - timedelta(days=d) for d in (50, 49)]
UI_TIMEOUT_MS = 60_000
BACKFILL_TIMEOUT = 300


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/test.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _dismiss_welcome_whenever_shown(page) -> None:
    """A fresh instance greets the first visitor with a newsletter dialog, at a moment of its
    choosing (it once covered the catalog after the page was idle). Playwright runs this handler
    before any action the dialog would block."""
    skip = page.get_by_role("button", name="Skip")
    page.add_locator_handler(skip, lambda: skip.click())


@pytest.mark.browser
def test_operator_backfills_two_days_from_the_partition_dialog(
    dagster_stack, s3_server, browser, tmp_path
):
    landing = Landing(s3_server, stack_settings(dagster_stack))
    for i, day in enumerate(DAYS):
        rows = [rollup(f"{day}-e1", day=day, bytes=100 + i), rollup(f"{day}-e2", day=day)]
        landing.put("rollups.parquet", parquet_bytes(rows), day=day)
    before = set(backfill_ids(dagster_stack))

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    _dismiss_welcome_whenever_shown(page)
    page.goto(f"{dagster_stack.url}/assets", wait_until="networkidle")
    page.locator('a[href="/assets/usage_daily"]').first.click()  # the catalog's entry
    page.wait_for_url("**/assets/usage_daily**")
    # The asset's job materializes the whole day: ingest, dedupe, publish, checks.
    page.locator('a[href*="/jobs/daily_usage"]').first.click()
    page.wait_for_url("**/jobs/daily_usage**")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    partitions = dialog.get_by_placeholder("No matching partitions")
    partitions.fill(f"[{DAYS[0].isoformat()}...{DAYS[1].isoformat()}]")
    partitions.press("Enter")
    dialog.get_by_text("2 partitions").wait_for()
    page.screenshot(path=str(tmp_path / "backfill-dialog.png"))
    dialog.get_by_role("button", name="Launch backfill").click()

    new = dagster_stack.wait_for(
        lambda: set(backfill_ids(dagster_stack)) - before, 60, "the backfill from the UI"
    )
    assert len(new) == 1
    # One run for the range (the daily assets' BackfillPolicy.single_run), day by day inside.
    (run,) = wait_for_backfill_runs(dagster_stack, new.pop(), 1, BACKFILL_TIMEOUT)
    page.screenshot(path=str(tmp_path / "after-launch.png"))

    tags = tags_of(run)
    span = (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
    assert span == (DAYS[0].isoformat(), DAYS[1].isoformat())
    assert run["status"] == "SUCCESS"
    with stack_warehouse(dagster_stack) as warehouse:
        totals = [usage_rows(warehouse, d.isoformat())[0][-2:] for d in DAYS]
    assert totals == [(1100, 20), (1101, 20)]
