"""The newcomer's path: `usage-etl demo` on a few days, then the README's commands in a plain
shell that only has `source dagster_home/demo.env`, piped output, and the UI on the demo.

One demo per module (a few days of a small fleet, ~1-2 min); it ends in the last days before
today so the UI's daily partitions (from USAGE_ETL_FIRST_DAY) are the demo's days. The tests
use the demo's own dates wherever the README names October 2026."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from e2e_stack import DagsterStack
from test_e2e_browser import _dismiss_welcome_whenever_shown, browser  # noqa: F401

from usage_etl.automation.tags import DAY_TAG, MONTH_TAG, TRIGGER_TAG
from usage_etl.finance_example import BEGIN, END
from usage_etl.local_stack import free_port
from usage_etl.settings import REPO_ROOT

pytestmark = pytest.mark.xdist_group("dagster_stack")

BIN = Path(sys.executable).parent
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
FIRST = YESTERDAY - timedelta(days=min(2, YESTERDAY.day - 1))  # up to 3 days, one month
DAYS = [FIRST + timedelta(days=i) for i in range((YESTERDAY - FIRST).days + 1)]
MONTH = f"{FIRST:%Y-%m}"
UI_TIMEOUT_MS = 60_000


def base_env(home: Path) -> dict[str, str]:
    """A plain shell: PATH and DAGSTER_HOME, none of the pipeline's or AWS settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DAGSTER_HOME": str(home),
            "HOME": os.environ.get("HOME", "/tmp")}  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    args = [str(BIN / "usage-etl"), "demo", "--month", MONTH, "--start-day", str(FIRST.day),
            "--days", str(len(DAYS)), "--nodes", "3", "--accounts", "5",
            "--rows-per-day", "2000", "--s3-port", str(free_port()),
            "--export-dir", str(root / "exports")]  # fmt: skip
    result = subprocess.run(
        args, cwd=root, env=base_env(home), capture_output=True, text=True, timeout=900
    )
    pid_file = root / ".demo" / "seaweedfs" / "weed.pid"
    try:
        yield result, home, root
    finally:
        if pid_file.exists():  # the SeaweedFS this demo started and left running
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass


def demo_env(home: Path) -> dict[str, str]:
    """The environment after `source demo.env` in a plain shell."""
    out = subprocess.run(
        ["bash", "-c", f"source {home / 'demo.env'} && env -0"],
        env=base_env(home), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)


def check_evaluations(home: Path) -> list:
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    try:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: "demo"}))
        evaluations = [
            event.dagster_event.event_specific_data
            for run in runs
            for event in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
        return runs, evaluations
    finally:
        instance.dispose()


def test_demo_prints_progress_and_checks_not_dagster_events(demo):
    result, home, root = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert not re.search(r"\bDEBUG\b", out), "Dagster's event stream reached the terminal"
    assert "dagster - " not in out
    assert re.search(rf"daily_usage\s.*{len(DAYS)}/{len(DAYS)}", out), out  # the progress bars
    assert re.search(r"monthly_invoices\s.*1/1", out), out
    assert (home / "demo.log").stat().st_size > 0 and str(home / "demo.log") in out

    runs, evaluations = check_evaluations(home)
    days = {r.tags.get(DAY_TAG) for r in runs if r.job_name == "daily_usage"}
    assert days == {d.isoformat() for d in DAYS}  # README's tag:usage_etl/day=… finds them
    assert {r.tags.get(MONTH_TAG) for r in runs} == {MONTH}
    failed = Counter(e.check_name for e in evaluations if not e.passed)
    assert failed, "the injected faults should fail some checks"
    section = out[out.index("Checks that failed or warned") :]
    for name, count in failed.items():
        line = next(line for line in section.splitlines() if name in line)
        assert re.search(rf"\b{count} of \d+\b", line), line

    env = (home / "demo.env").read_text()
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "USAGE_ETL_LANDING_URL", "USAGE_ETL_CLICKHOUSE_DSN", "USAGE_ETL_PRICE_BOOK",
                "USAGE_ETL_FIRST_DAY"):  # fmt: skip
        assert f"export {key}=" in env
    manifest = json.loads((root / "exports" / f"period={MONTH}" / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"invoice_line_items.csv", "invoice_line_items.parquet"}
    assert str(root / "exports") in out


def readme_commands() -> list[str]:
    """The commands of the README's "Running it" table, optional parts included (first choice),
    placeholders filled with the demo's account and dates."""
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("## Running it", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in table.splitlines():
        match = re.match(r"^\| [^|]+ \| `(.+)` \|$", line.strip())
        if not match:
            continue
        command = match.group(1).replace("\\|", "|")
        command = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split("|")[0], command)
        command = command.replace("ACCOUNT", "acme").replace("2026-10-05", DAYS[0].isoformat())
        command = command.replace("2026-10-01", f"{MONTH}-01").replace("2026-10", MONTH)
        commands.append(command)
    return commands


def test_readme_commands_work_in_a_plain_shell_after_sourcing_demo_env(demo, tmp_path):
    result, home, _ = demo
    assert result.returncode == 0
    commands = readme_commands()
    assert len(commands) >= 7
    created = [REPO_ROOT / "usage.png", REPO_ROOT / "dagster_home" / "exports"]
    existed = {p for p in created if p.exists()}
    try:
        for command in commands:
            run = subprocess.run(
                ["bash", "-c", f"source {home / 'demo.env'} && {command}"], cwd=REPO_ROOT,
                env=base_env(home), capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    finally:
        for path in created:
            if path not in existed and path.is_file():
                path.unlink()
            elif path not in existed and path.is_dir():
                shutil.rmtree(path)


def _piped(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**demo_env(home), "COLUMNS": "40"}  # a narrow terminal must not matter to a pipe
    return subprocess.run([str(BIN / "usage-etl"), *args], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_piped_usage_and_invoices_are_never_cut(demo):
    _, home, _ = demo
    usage = _piped(home, "usage", "acme", "--range", "30d", "--raw")
    as_json = json.loads(_piped(home, "usage", "acme", "--range", "30d", "--format", "json").stdout)
    invoices = _piped(home, "invoices", "--period", MONTH)
    lines = json.loads(_piped(home, "invoices", "--period", MONTH, "--format", "json").stdout)
    for result in (usage, invoices):
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout
    assert as_json["totals"]["egress_bytes"] > 0  # relative ranges end at the demo's data
    assert f"{as_json['totals']['egress_bytes']:,}" in usage.stdout
    for line in lines["lines"]:
        assert isinstance(line["tier"], int)
        assert line["corrected_period_start"] is None or line["kind"] == "adjustment"
        assert line["quantity"] in invoices.stdout and line["invoice_id"] in invoices.stdout
    assert all(i["finalized_at"] is None or i["finalized_at"].endswith("Z")
               for i in lines["invoices"])  # fmt: skip


def test_unknown_accounts_fail_with_a_suggestion(demo):
    _, home, _ = demo
    usage = _piped(home, "usage", "acm", "--range", "7d")
    invoices = _piped(home, "invoices", "--period", MONTH, "--account", "nobody")
    for result in (usage, invoices):
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "did you mean acme" in usage.stderr
    assert "unknown account 'nobody'" in invoices.stderr


@pytest.fixture(scope="module")
def demo_ui(demo):
    _, home, _ = demo
    env = {**demo_env(home), "USAGE_ETL_AUTOMATION": "stopped", "PYTHONUNBUFFERED": "1"}
    stack = DagsterStack(home, env, free_port())
    try:
        stack._spawn("webserver", ["dagster-webserver", "-m", "usage_etl.definitions",
                                   "-h", "127.0.0.1", "-p", str(stack.port)])  # fmt: skip
        stack.wait_for(stack._location_loaded, 180, "the webserver on the demo's instance")
        yield stack
    finally:
        stack.stop()


@pytest.mark.browser
def test_catalog_shows_columns_and_the_demo_partitions(demo_ui, browser, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    _dismiss_welcome_whenever_shown(page)
    page.goto(f"{demo_ui.url}/assets", wait_until="networkidle")
    page.locator('a[href="/assets/invoice_line_items"]').first.click()  # the catalog's entry
    page.wait_for_url("**/assets/invoice_line_items**")
    page.get_by_text("corrected_period_start").first.wait_for()
    page.get_by_text("Decimal(18, 2)").first.wait_for()  # the amount column's type
    page.screenshot(path=str(tmp_path / "invoice_line_items.png"))

    page.goto(f"{demo_ui.url}/assets/usage_daily?view=partitions", wait_until="networkidle")
    page.get_by_text(DAYS[-1].isoformat()).first.wait_for()
    page.screenshot(path=str(tmp_path / "usage_daily_partitions.png"))
    text = page.locator("body").inner_text()
    assert DAYS[0].isoformat() in text
    assert (DAYS[0] - timedelta(days=1)).isoformat() not in text  # partitions start at the demo


def test_finance_figures_are_generated_from_the_demo(demo, tmp_path):
    _, home, _ = demo
    doc = tmp_path / "finance.md"
    doc.write_text((REPO_ROOT / "docs" / "finance.md").read_text())
    env = demo_env(home)
    invoices = json.loads(_piped(home, "invoices", "--period", MONTH, "--format", "json").stdout)
    account = invoices["invoices"][0]
    run = subprocess.run(
        [sys.executable, "-m", "usage_etl.finance_example", str(doc), "--period", MONTH,
         "--account", account["account_id"]],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    text = doc.read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert account["invoice_id"] in block and f"{account['subtotal']} USD" in block
    before = (REPO_ROOT / "docs" / "finance.md").read_text()
    assert text.split(BEGIN)[0] == before.split(BEGIN)[0]  # nothing else changed
    assert text.split(END)[1] == before.split(END)[1]
