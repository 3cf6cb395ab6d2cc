"""Node authorization end to end: a self-hosted node bills only its own account, unregistered
nodes are reported (warn) or quarantined, and a broken registry stops the run clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from reliability_harness import (
    DAY,
    daily_table,
    expected_daily,
    failure_message,
    run_job,
)
from rollup_files import ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.settings import REPO_ROOT

REGISTRY = {
    "nodes": {
        "cache-eu-1": {"mode": "managed"},
        "acme-onprem-1": {"mode": "self_hosted", "account_id": "acme"},
    }
}


def _registry(tmp_path: Path, monkeypatch, unregistered: str) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump({"unregistered": unregistered, **REGISTRY}))
    monkeypatch.setenv("USAGE_ETL_NODE_REGISTRY", str(path))


def _deliver(landing) -> dict[str, list[dict]]:
    """Rows of a managed node, a self-hosted node (own and foreign accounts), an unknown node
    and a node whose id differs from a registered one only by case."""
    rows = {
        "managed": [rollup(f"m{i}", node_id="cache-eu-1", account_id=a, bytes=100 + i)
                    for i, a in enumerate(("acme", "globex", "initech"))],
        "own": [rollup("s1", node_id="acme-onprem-1", account_id="acme", bytes=7)],
        "foreign": [rollup(f"s{i}", node_id="acme-onprem-1", account_id=a, bytes=9)
                    for i, a in ((2, "globex"), (3, "acme "), (4, "ACME"))],
        "unknown": [rollup("u1", node_id="rogue-9", account_id="globex", bytes=11),
                    rollup("u2", node_id="Acme-Onprem-1", account_id="acme", bytes=13)],
    }  # fmt: skip
    landing.put("m.parquet", parquet_bytes(rows["managed"]), node="cache-eu-1")
    landing.put("s.ndjson.gz", ndjson_gz_bytes(rows["own"] + rows["foreign"]), node="acme-onprem-1")
    landing.put("u.parquet", parquet_bytes(rows["unknown"][:1]), node="rogue-9")
    landing.put("v.ndjson.gz", ndjson_gz_bytes(rows["unknown"][1:]), node="Acme-Onprem-1")
    return rows


def _quarantined(warehouse) -> dict[str, list[str]]:
    rows = warehouse.query_rows(
        f"SELECT toString(rule), arraySort(groupArray(value)) "
        f"FROM {warehouse.table('quarantined_rows')} GROUP BY rule"
    )
    return dict(rows)


def _unregistered_metadata(result) -> list[str]:
    return _metadata(result, "unregistered_nodes")


def test_warn_mode_bills_unregistered_nodes_and_names_them(
    landing, warehouse, tmp_path, monkeypatch
):
    _registry(tmp_path, monkeypatch, "warn")
    rows = _deliver(landing)

    result = run_job("daily_usage", DAY.isoformat())

    assert result.success, failure_message(result)
    assert daily_table(warehouse) == expected_daily(rows["managed"] + rows["own"] + rows["unknown"])
    assert _quarantined(warehouse) == {"tenant_mismatch": ["ACME", "acme ", "globex"]}
    assert sorted(_unregistered_metadata(result)) == ["Acme-Onprem-1", "rogue-9"]


def test_quarantine_mode_bills_only_registered_nodes(landing, warehouse, tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, "quarantine")
    rows = _deliver(landing)

    result = run_job("daily_usage", DAY.isoformat())

    assert result.success, failure_message(result)
    assert daily_table(warehouse) == expected_daily(rows["managed"] + rows["own"])
    assert _quarantined(warehouse) == {
        "tenant_mismatch": ["ACME", "acme ", "globex"],
        "unregistered_node": ["Acme-Onprem-1", "rogue-9"],
    }
    assert sorted(_unregistered_metadata(result)) == ["Acme-Onprem-1", "rogue-9"]


def test_registering_a_node_bills_its_quarantined_rows_on_the_next_run(
    landing, warehouse, tmp_path, monkeypatch
):
    """Objects are decided again when the authorization that judged them changes, although
    their ETag did not: registering a node (or fixing a self-hosted node's account) and
    re-running the day bills what was quarantined, without anyone re-sending files."""
    _registry(tmp_path, monkeypatch, "quarantine")
    landing.put("u.parquet", parquet_bytes([rollup("u1", node_id="new-1", bytes=5)]), node="new-1")
    landing.put("m.parquet", parquet_bytes([rollup("m1", node_id="cache-eu-1", bytes=3)]),
                node="cache-eu-1")  # fmt: skip
    assert run_job("daily_usage", DAY.isoformat()).success
    assert [r[-2] for r in daily_table(warehouse)] == [3]
    unchanged = run_job("daily_usage", DAY.isoformat())
    assert _metadata(unchanged, "objects_already_ingested") == 2

    path = tmp_path / "nodes.yaml"
    registry = yaml.safe_load(path.read_text())
    registry["nodes"]["new-1"] = {"mode": "managed"}
    path.write_text(yaml.safe_dump(registry))
    rerun = run_job("daily_usage", DAY.isoformat())

    assert rerun.success
    assert _metadata(rerun, "objects_already_ingested") == 1  # only new-1's object re-read
    assert sorted(r[-2] for r in daily_table(warehouse)) == [3, 5]


def _metadata(result, name: str):
    (materialization,) = result.asset_materializations_for_node("rollup_rows")
    return materialization.metadata[name].value


@pytest.mark.parametrize(
    "content",
    [
        "nodes: {x: {mode: self_hosted}}",  # self-hosted without its account
        "nodes: {x: {mode: managed, account_id: acme}}",
        "unregistered: allow",
        "nodes: [x]",
        "nodes: {x: {mode: managed, extra: 1}}",
        ": not yaml : [",
    ],
)
def test_an_invalid_registry_fails_the_run_before_anything_is_read(
    content, landing, warehouse, tmp_path, monkeypatch
):
    path = tmp_path / "nodes.yaml"
    path.write_text(content)
    monkeypatch.setenv("USAGE_ETL_NODE_REGISTRY", str(path))
    landing.put("m.parquet", parquet_bytes([rollup("m1")]))

    result = run_job("daily_usage", DAY.isoformat(), retries=False)

    assert not result.success
    assert f"node registry {path} is invalid" in failure_message(result)
    assert warehouse.query_one(f"SELECT count() FROM {warehouse.table('ingest_objects')}") == 0


def test_the_sample_registry_is_valid():
    from usage_etl.usage.registry import NodeRegistry

    registry = NodeRegistry.from_file(REPO_ROOT / "config" / "nodes.example.yaml")
    assert registry.tenant_for_node("acme-onprem-1").only_account == "acme"
    assert registry.tenant_for_node("not-registered").reject_unregistered
