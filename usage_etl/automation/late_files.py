"""Late rollup files: objects that landed after the run that last published their day.

Cheap by construction: one tick looks at a bounded batch of day prefixes (round-robin over the
look-back window, the position kept in the sensor cursor), lists them in S3, and compares each
rollup object's LastModified with the day's baseline (a time taken from the Dagster instance,
never from ClickHouse). The cursor also remembers which set of late objects was already
requested per day, so each arrival requests exactly one re-run even before that re-run has
happened.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from usage_etl.landing import LandedObject
from usage_etl.settings import LateFileSettings

__all__ = ["LandedObject", "ScanCursor", "ScanWindow", "late_objects", "signature"]

DEFAULT_LOOKBACK_DAYS = LateFileSettings.model_fields["late_lookback_days"].default
DEFAULT_DAYS_PER_TICK = LateFileSettings.model_fields["late_days_per_tick"].default
LOOKBACK_ENV = "USAGE_ETL_LATE_LOOKBACK_DAYS"
DAYS_PER_TICK_ENV = "USAGE_ETL_LATE_DAYS_PER_TICK"


@dataclass(frozen=True)
class ScanWindow:
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    days_per_tick: int = DEFAULT_DAYS_PER_TICK

    @classmethod
    def from_env(cls) -> ScanWindow:
        knobs = LateFileSettings()
        window = cls(knobs.late_lookback_days, knobs.late_days_per_tick)
        if window.lookback_days < 1 or window.days_per_tick < 1:
            raise ValueError(f"{LOOKBACK_ENV} and {DAYS_PER_TICK_ENV} must be positive")
        return window

    def days(self, today: date, first_day: date) -> list[date]:
        """The look-back window, newest first: yesterday back to `lookback_days` ago."""
        days = [today - timedelta(days=i) for i in range(1, self.lookback_days + 1)]
        return [d for d in days if d >= first_day]


@dataclass
class ScanCursor:
    position: int = 0  # offset into the window where the next tick starts
    requested: dict[str, str] = field(default_factory=dict)  # day -> signature requested

    @classmethod
    def parse(cls, text: str | None) -> ScanCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data.get("position", 0)), dict(data.get("requested", {})))

    def dump(self) -> str:
        return json.dumps(
            {"position": self.position, "requested": dict(sorted(self.requested.items()))},
            separators=(",", ":"),
        )

    def next_batch(self, window: list[date], size: int) -> list[date]:
        """The next `size` days of the window (wrapping), and advance the position."""
        if not window:
            return []
        start = self.position % len(window)
        count = min(size, len(window))
        self.position = (start + count) % len(window)
        return [window[(start + i) % len(window)] for i in range(count)]

    def forget_outside(self, window: Iterable[date]) -> None:
        keep = {d.isoformat() for d in window}
        self.requested = {d: s for d, s in self.requested.items() if d in keep}


def late_objects(objects: Iterable[LandedObject], baseline: float) -> list[LandedObject]:
    """Objects the baseline run may not have listed. S3 truncates LastModified to the second,
    so anything stamped in the baseline's own second counts as late: a spare re-run is
    harmless (already-ingested ETags are skipped), a missed file is a wrong invoice."""
    cutoff = math.floor(baseline)
    return [o for o in objects if o.last_modified.timestamp() >= cutoff]


def signature(objects: Iterable[LandedObject]) -> str:
    """Identifies a set of late objects (key and ETag), so a new arrival changes it."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        digest.update(f"{obj.key}\t{obj.etag}\n".encode())
    return digest.hexdigest()[:16]
