"""The publish groups hourly usage by one packed key of (account, hour, project, region, node,
direction, operation, artifact kind, network path) ids. Exactness rests on the packing being a
bijection: every id comes back from the key unchanged, two different id tuples never share a
key, and keys sort as usage_hourly's sorting key does. The daily key (the hourly key with its
hour cleared) keeps every other id, and sorts as usage_daily's key does. Checked in ClickHouse
itself, for the three shapes the key takes: a UInt64, a UInt128 and (beyond 128 bits) a tuple."""

from __future__ import annotations

import re

import pytest

from usage_etl.rollups.schema import USAGE_DIMENSIONS
from usage_etl.usage.publish import HOURLY_ORDER_IDS, _hourly_key, _id_width

SMALL_FLEET = dict(zip(USAGE_DIMENSIONS, (2000, 5000, 5, 10, 2, 6, 5, 3), strict=True))
LARGE_FLEET = dict(zip(USAGE_DIMENSIONS, (10**6, 10**7, 300, 70_000, 2, 300, 300, 3), strict=True))
HUGE_FLEET = dict.fromkeys(USAGE_DIMENSIONS, 2**31)
COLUMNS = HOURLY_ORDER_IDS.split(", ")
# The three shapes the key takes, with a fleet that gets each.
KEY_SHAPES = pytest.mark.parametrize(
    ("counts", "kind"),
    [(SMALL_FLEET, "UInt64"), (LARGE_FLEET, "UInt128"), (HUGE_FLEET, "Tuple")],
)


def _ids(counts: dict[str, int], rows: int) -> str:
    """`rows` id tuples in range (pseudo-random, plus every column at 1 and at its maximum)."""
    parts = ["toUInt8(number % 24) AS hour_of_day"]
    for name in USAGE_DIMENSIONS:
        count, width = counts[name], _id_width(counts[name])
        spread = f"cityHash64(number, '{name}') % {count} + 1"
        value = f"multiIf(number = 0, 1, number = 1, {count}, {spread})"
        parts.append(f"toUInt{width}({value}) AS i_{name}")
    return f"SELECT {', '.join(parts)} FROM numbers({rows})"


def _figures(warehouse, decoded: str, original: str, extra: str = "0") -> tuple:
    """Of `decoded` (rows of `original`, `sort_key` and the ids decoded from it): rows, key
    types, rows whose ids differ from `original` (an expression of them), `extra` (a count),
    distinct keys, distinct originals, and rows whose original sorts before the previous key's."""
    return warehouse.query_rows(
        f"""
        SELECT count(), groupUniqArray(toTypeName(sort_key)), countIf(original != {original}),
               {extra}, uniqExact(sort_key), uniqExact(original), countIf(previous > original)
        FROM (
            SELECT *, lagInFrame(original) OVER (
                ORDER BY sort_key ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
            ) AS previous
            FROM ({decoded})
        )
        """
    )[0]


@KEY_SHAPES
def test_the_hourly_key_is_an_order_preserving_bijection(warehouse, counts, kind):
    key = _hourly_key(counts)
    original = f"tuple({HOURLY_ORDER_IDS})"
    keyed = f"SELECT {original} AS original, {key.encode} AS sort_key FROM ({_ids(counts, 20000)})"
    decoded = f"SELECT original, sort_key, {key.decode} FROM ({keyed})"
    rows, kinds, wrong, _, keys, distinct, inversions = _figures(warehouse, decoded, original)
    assert rows == 20000 and kinds[0].startswith(kind)
    assert wrong == 0  # every id of every row comes back from the key
    assert keys == distinct  # distinct id tuples, distinct keys: no two groups merge
    assert inversions == 0  # key order is usage_hourly's order
    assert re.findall(r" AS (\w+)", key.decode) == COLUMNS


@KEY_SHAPES
def test_the_daily_key_clears_the_hour_and_keeps_every_other_id(warehouse, counts, kind):
    key = _hourly_key(counts)
    original = f"tuple({', '.join(c for c in COLUMNS if c != 'hour_of_day')})"
    ids = _ids(counts, 20000)
    keyed = f"SELECT {original} AS original, {key.encode} AS sort_key FROM ({ids})"
    daily = f"SELECT original, {key.daily} AS sort_key FROM ({keyed})"
    decoded = f"SELECT original, sort_key, {key.decode} FROM ({daily})"
    rows, kinds, wrong, hours, keys, distinct, inversions = _figures(
        warehouse, decoded, original, "countIf(hour_of_day != 0)"
    )
    assert rows == 20000 and kinds == [kinds[0]] and kinds[0].startswith(kind)
    assert wrong == 0 and hours == 0  # every id but the hour comes back; the hour is 0
    assert keys == distinct  # one daily key per daily group: hours merge, nothing else does
    assert inversions == 0  # daily key order is usage_daily's order
