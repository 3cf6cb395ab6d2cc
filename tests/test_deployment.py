"""deploy/dagster.yaml: the server deployment's instance loads in Dagster 1.13 against a real
PostgreSQL, queues runs, and limits them to one per partition with parallel partitions."""

from __future__ import annotations

import shutil

import dagster as dg
from dagster_postgres.run_storage import PostgresRunStorage

from usage_etl.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "dagster.yaml"


def test_server_instance_queues_one_run_per_partition_in_parallel(
    postgres_server, tmp_path, monkeypatch
):
    shutil.copy(DEPLOY, tmp_path / "dagster.yaml")
    for key, value in postgres_server.env().items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        # dagster-postgres' storages, each keeping its connections open (pg_instance_storage)
        assert type(instance.run_storage).__name__ == "KeptOpenPostgresRunStorage"
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert type(instance.event_log_storage).__name__ == "KeptOpenPostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "KeptOpenPostgresScheduleStorage"
        config = instance.get_concurrency_config()
        queue = config.run_queue_config
        assert queue.max_concurrent_runs > 1
        per_partition = [
            limit for limit in queue.tag_concurrency_limits
            if limit["key"] == "dagster/partition"
        ]  # fmt: skip
        assert per_partition == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        pools = config.pool_config
        assert pools.default_pool_limit > 1 and pools.pool_granularity.value == "run"
