"""Two first-ever runs at once on a brand-new SQLite DAGSTER_HOME.

Without preparation both processes create the instance's tables: one fails with "table runs
already exists", or the runs database gets two Alembic heads and every later run fails. Each
entry point (scripts/setup.sh, the demo, `usage-etl doctor --repair-instance`) sets the instance
up first, under a file lock. The race is in that preparation (the schema's creation), so it is
raced five times over on five fresh homes (USAGE_ETL_TEST_FRESH_INSTANCE_RACES for more); once,
each of the two racing processes then also runs `dagster job execute` on an empty day, which
must both succeed on the prepared instance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from reliability_harness import DAGSTER, REPO

from usage_etl.instance import instance_problems

PREPARE = [sys.executable, "-c", "from usage_etl.instance import prepare_instance as p; p()"]
EMPTY_DAY = "2026-09-01"
RACES = int(os.environ.get("USAGE_ETL_TEST_FRESH_INSTANCE_RACES", "5"))
FULL_RUN_RACES = 1  # the first race also runs both jobs; the others race the preparation only


def _first_run(home, engine, *, execute: bool) -> subprocess.Popen:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "USAGE_ETL_CLICKHOUSE_DSN": f"chdb://{engine}",
    }
    run = [DAGSTER, "job", "execute", "-m", "usage_etl.definitions", "-j", "daily_usage",
           "--tags", json.dumps({"dagster/partition": EMPTY_DAY})]  # fmt: skip
    script = subprocess.list2cmdline(PREPARE)
    if execute:
        script += f" && {subprocess.list2cmdline(run)}"
    return subprocess.Popen(
        ["sh", "-c", script], env=env, cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_two_first_runs_at_once_on_a_fresh_instance(usage_env, tmp_path):
    import dagster as dg

    for attempt in range(RACES):
        home = tmp_path / f"home-{attempt}"
        home.mkdir()
        execute = attempt < FULL_RUN_RACES
        runs = [
            _first_run(home, tmp_path / f"engine-{attempt}-{n}", execute=execute) for n in range(2)
        ]
        outputs = [run.communicate(timeout=600)[0] for run in runs]

        for run, output in zip(runs, outputs, strict=True):
            assert run.returncode == 0, output[-3000:]
            assert "already exists" not in output
        assert instance_problems(home) == [], attempt
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = instance.get_run_records()
            assert len(records) == (2 if execute else 0)
            assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
