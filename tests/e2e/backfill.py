"""The GraphQL calls the Dagster UI makes to launch and follow a partition backfill."""

from __future__ import annotations

from e2e_stack import DagsterStack, StackError

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status isAssetBackfill numPartitions
      runs { runId status startTime endTime tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""

TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
DAILY_ASSETS = ("rollup_rows", "usage_hourly", "usage_daily")


def launch_asset_backfill(
    stack: DagsterStack, partitions: list[str], assets: tuple[str, ...] = DAILY_ASSETS
) -> str:
    """Materialize `assets` for `partitions` as one backfill, like the asset page's dialog."""
    params = {
        "assetSelection": [{"path": [a]} for a in assets],
        "partitionNames": partitions,
        "fromFailure": False,
        "tags": [{"key": "usage_etl/trigger", "value": "operator_backfill"}],
    }
    result = stack.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise StackError(f"backfill not launched: {result}")
    return result["backfillId"]


def backfill(stack: DagsterStack, backfill_id: str) -> dict:
    result = stack.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise StackError(f"no backfill {backfill_id}: {result}")
    return result


def wait_for_backfill(stack: DagsterStack, backfill_id: str, timeout: float) -> dict:
    def finished():
        state = backfill(stack, backfill_id)
        return state if state["status"] in TERMINAL else None

    return stack.wait_for(finished, timeout, f"backfill {backfill_id}", interval=2)


RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def wait_for_backfill_runs(stack: DagsterStack, backfill_id: str, count: int, timeout: float):
    """Until the backfill's `count` runs have all finished (the daemon marks the backfill
    itself complete on its next iteration, up to 30 s later)."""

    def finished():
        runs = backfill(stack, backfill_id)["runs"]
        done = len(runs) == count and all(r["status"] in RUN_TERMINAL for r in runs)
        return runs if done else None

    return stack.wait_for(finished, timeout, f"the runs of backfill {backfill_id}", interval=2)


def backfill_ids(stack: DagsterStack, limit: int = 20) -> list[str]:
    """The most recent backfills, newest first."""
    data = stack.graphql(BACKFILLS, {"limit": limit})["partitionBackfillsOrError"]
    return [b["id"] for b in data.get("results", [])]


BACKFILLS = """
query Backfills($limit: Int) {
  partitionBackfillsOrError(limit: $limit) { ... on PartitionBackfills { results { id } } }
}
"""


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


MATERIALIZED = """
query Partitions($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 400) { partition runId } }
  }
}
"""


def partition_statuses(stack: DagsterStack, asset: str) -> dict[str, set[str]]:
    """The partitions of `asset` that have a materialization (any run)."""
    data = stack.graphql(MATERIALIZED, {"key": {"path": [asset]}})
    events = data["assetOrError"].get("assetMaterializations", [])
    return {"materialized": {e["partition"] for e in events if e["partition"]}}


RUN_CHECKS = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    ... on EventConnection {
      events {
        __typename
        ... on AssetCheckEvaluationEvent {
          evaluation { checkName partition success }
        }
      }
    }
  }
}
"""


def check_partitions(stack: DagsterStack, run_id: str, check_name: str) -> dict[str, bool]:
    """Per partition, whether `check_name` passed in run `run_id`."""
    events = stack.graphql(RUN_CHECKS, {"runId": run_id})["logsForRun"]["events"]
    return {
        e["evaluation"]["partition"]: e["evaluation"]["success"]
        for e in events
        if e["__typename"] == "AssetCheckEvaluationEvent"
        and e["evaluation"]["checkName"] == check_name
    }
