"""The publish picks a repeated event_id's winner by one UInt256 (dedupe.VERSION_KEY) instead of
the tuple (emitted_at, content_hash) of contract §1. Exactness rests on the two orders being the
same: checked in ClickHouse on pairs of versions spanning timestamps before and after 1970,
equal timestamps, and content hashes that differ in their first, middle or last byte."""

from __future__ import annotations

from usage_etl.usage.dedupe import VERSION_KEY, VERSION_KEY_LATEST_FIRST

# Versions: emitted_at (some before the epoch, some equal) and a 16-byte content hash.
VERSIONS = """
    SELECT toDateTime64('2026-10-05 00:00:00', 6, 'UTC')
               + toIntervalMicrosecond(
                   multiIf(number % 7 = 0, -toInt64(9e16) + number, number % 5 = 0, 0,
                           toInt64(cityHash64(number) % 1000) - 500)) AS emitted_at,
           toFixedString(unhex(hex(multiIf(
               number % 3 = 0, MD5(toString(number % 4)),
               number % 3 = 1, reverse(MD5(toString(number % 4))),
               MD5(toString(number))))), 16) AS content_hash
    FROM numbers(3000)
"""


def test_the_version_key_orders_as_emitted_at_then_content_hash(warehouse):
    pairs = f"""
        SELECT a.emitted_at AS ea, a.content_hash AS ha, b.emitted_at AS eb, b.content_hash AS hb,
               a.key AS ka, b.key AS kb, a.latest AS la, b.latest AS lb
        FROM (SELECT *, {VERSION_KEY} AS key, {VERSION_KEY_LATEST_FIRST} AS latest
              FROM ({VERSIONS})) AS a
        CROSS JOIN (SELECT *, {VERSION_KEY} AS key, {VERSION_KEY_LATEST_FIRST} AS latest
                    FROM ({VERSIONS}) WHERE cityHash64(content_hash, emitted_at) % 10 = 0) AS b
    """
    pairs_checked, wrong_order, wrong_latest, before_epoch, equal_times = warehouse.query_rows(
        f"""
        SELECT count(),
               countIf(sign(ka > kb) - sign(ka < kb)
                       != sign((ea, ha) > (eb, hb)) - sign((ea, ha) < (eb, hb))),
               countIf(sign(la > lb) - sign(la < lb)
                       != sign((eb, ha) > (ea, hb)) - sign((eb, ha) < (ea, hb))),
               countIf(ea < toDateTime64('1970-01-01 00:00:00', 6, 'UTC')),
               countIf(ea = eb AND ha != hb)
        FROM ({pairs})
        """
    )[0]
    assert pairs_checked > 500_000 and before_epoch > 0 and equal_times > 0
    assert wrong_order == 0  # greater key <=> greater (emitted_at, content_hash)
    assert wrong_latest == 0  # smaller latest-first key <=> later emitted_at, then smaller hash
