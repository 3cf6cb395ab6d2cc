"""The landing area: where cache nodes drop rollup files, as one value (client, bucket, prefix).

`Landing` owns listing it: `objects_of_day` (what a day's run decides about), `rollups_of_day`
(what the late-file sensor compares with its baseline) and `rollups_of_period` (what the
invoice completeness check compares with the ledger) all go through `_list`, the one paginated
listing of the area. The client comes from `usage_etl.s3` (bounded timeouts and retries);
`defs/` builds the value from the `LandingResource`, tests and scripts from a client directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from usage_etl.periods import Period
from usage_etl.rollups.schema import (
    IgnoreReason,
    RollupKey,
    classify_key,
    day_prefix,
    prefix_head,
)


@dataclass(frozen=True)
class LandedObject:
    """One listed object: its ETag without quotes, LastModified in UTC, and what its key is
    (`kind`: a rollup file of some day, hour and node, or why it is ignored)."""

    key: str
    etag: str
    last_modified: datetime
    size: int = 0
    kind: RollupKey | IgnoreReason | None = None


@dataclass(frozen=True)
class Landing:
    client: Any  # a boto3 S3 client (usage_etl.s3.s3_client)
    bucket: str
    prefix: str

    def day_prefix(self, day: date) -> str:
        return day_prefix(self.prefix, day)

    def month_prefix(self, period: Period) -> str:
        return f"{prefix_head(self.prefix)}date={period.label}-"

    def relative(self, key: str) -> str:
        """The key relative to the landing prefix."""
        return key.removeprefix(prefix_head(self.prefix))

    def _list(self, prefix: str) -> Iterator[LandedObject]:
        """Every object under `prefix` (below the landing prefix), classified by its key."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                size = obj.get("Size", 0)
                yield LandedObject(
                    obj["Key"], obj.get("ETag", "").strip('"'), obj["LastModified"].astimezone(UTC),
                    size, classify_key(self.prefix, obj["Key"], size),
                )  # fmt: skip

    def objects_of_day(self, day: date) -> list[LandedObject]:
        """Every object under the day's prefix, sorted by key; a rollup key of another day
        under it is a bad key."""
        listed = []
        for obj in self._list(self.day_prefix(day)):
            if isinstance(obj.kind, RollupKey) and obj.kind.day != day:
                obj = LandedObject(obj.key, obj.etag, obj.last_modified, obj.size,
                                   IgnoreReason.BAD_KEY)  # fmt: skip
            listed.append(obj)
        return sorted(listed, key=lambda o: o.key)

    def rollups_of_day(self, day: date) -> Iterator[LandedObject]:
        """The rollup files under the day's prefix (ignored objects cannot change usage)."""
        return (o for o in self._list(self.day_prefix(day)) if isinstance(o.kind, RollupKey))

    def rollups_of_period(self, period: Period) -> Iterator[LandedObject]:
        """The rollup files of the period's days."""
        for obj in self._list(self.month_prefix(period)):
            if isinstance(obj.kind, RollupKey) and period.start <= obj.kind.day < period.end:
                yield obj
