"""The warehouse's faster string escaping for query parameters (warehouse/client.py,
`_install_fast_escape`) spells every string exactly as clickhouse-connect's own does."""

from __future__ import annotations

import random

from clickhouse_connect.driver import binding

from usage_etl.warehouse import client as warehouse_client
from usage_etl.warehouse.client import open_warehouse


def test_the_fast_escape_is_installed_and_spells_like_the_original():
    fast = binding.escape_str
    assert getattr(fast, "fast", False), "clickhouse-connect's escape_str is not replaced"
    original = fast.original
    rng = random.Random(11)
    alphabet = list("az09/=-_.:") + list(binding.must_escape) + ['"', "é", "€", "\x00", " ", "\r"]
    samples = ["", "plain/key=2026-10-01/part-0.parquet", "it's", "a\\b", "`x`", "t\tn\n"]
    for _ in range(5000):
        samples.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))
    for value in samples:
        assert fast(value) == original(value), repr(value)
    # Installing twice keeps the one replacement.
    assert warehouse_client._install_fast_escape() is False
    assert binding.escape_str is fast


def test_parameters_with_every_escaped_character_round_trip(tmp_path):
    values = ["it's", "back\\slash", "tick`", "tab\there", "line\nbreak", "plain", "\\'`\t\n"]
    with open_warehouse(f"chdb://{tmp_path / 'engine'}", "default") as warehouse:
        assert warehouse.query_one("SELECT {v:String}", {"v": values[0]}) == values[0]
        for value in values:
            assert warehouse.query_one("SELECT {v:String}", {"v": value}) == value
        got = warehouse.query_one("SELECT {v:Array(String)}", {"v": values})
        assert list(got) == values
        assert warehouse.query_one(
            "SELECT countIf(x IN {v:Array(String)}) "
            "FROM (SELECT arrayJoin({v:Array(String)}) AS x)",
            {"v": values},
        ) == len(values)
