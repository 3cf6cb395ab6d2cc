"""What to simulate: the fleet (`FleetSpec`) and the faults to inject (`FaultSpec`).

Both are frozen dataclasses so a (FleetSpec, FaultSpec, date) triple fully determines a
generated day. Rates are per file, per row or per node-hour as documented on each field;
explicit lists (`*_node_hours`, `late_hours`, ...) force a fault where a test needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, get_type_hints

from usage_etl.rollups.schema import RowRule

FORMATS = ("parquet", "ndjson", "mixed")
NodeHour = tuple[str, int]

# The rules the simulator injects by default: one broken field per bad row.
DEFAULT_BAD_ROW_RULES: tuple[str, ...] = (
    RowRule.SCHEMA_VERSION,
    RowRule.EVENT_ID,
    RowRule.ACCOUNT_ID,
    RowRule.DIRECTION,
    RowRule.NETWORK_PATH,
    RowRule.WINDOW_OUTSIDE_HOUR,
    RowRule.WINDOW_SECONDS,
    RowRule.BYTES,
)
# Every rule the simulator knows how to break (pass a subset as `bad_row_rules`).
SUPPORTED_BAD_ROW_RULES: tuple[str, ...] = (
    *DEFAULT_BAD_ROW_RULES,
    RowRule.NODE_ID_MISMATCH,
    RowRule.REGION,
    RowRule.OPERATION,
    RowRule.ARTIFACT_KIND,
    RowRule.REQUEST_COUNT,
    RowRule.INVALID_JSON,  # NDJSON files only
)
STRAY_KINDS = ("success_marker", "tmp_suffix", "tmp_folder", "csv")


class Fault(StrEnum):
    """Tags on a SimFile saying which faults shaped it."""

    REDELIVERY = "redelivery"  # identical copy of another file under a new name
    CORRECTION = "correction"  # carries corrected re-emissions (later emitted_at)
    CORRECTION_FIRST = "correction_first"  # ...and is named/uploaded before the original
    CORRECTED = "corrected"  # carries preliminary versions that a correction supersedes
    CONFLICT = "conflict"  # same event_id + emitted_at as another file, other values
    LATE = "late"  # arrives after the day was first processed
    TRUNCATED = "truncated"  # body cut short: unreadable
    MISSING_COLUMN = "missing_column"  # a required column is absent
    GOOD_COPY = "good_copy"  # a readable copy of a broken file
    BAD_ROWS = "bad_rows"  # some rows break exactly one rule of contract §1
    STRAY = "stray"  # not a rollup file (_SUCCESS, .tmp, _tmp/, .csv)
    UNDER_REPORTING = "under_reporting"  # the node reports less than it served


@dataclass(frozen=True)
class FleetSpec:
    """The simulated fleet. Node, account and project names depend only on this spec."""

    nodes: int = 6
    accounts: int = 40
    # Target rollup rows per day over the whole fleet (before faults add copies).
    rows_per_day: int = 20_000
    # Each account has 0..max_projects projects ("acme" has at least one).
    max_projects: int = 4
    regions: tuple[str, ...] = ("us-east-1", "eu-west-1", "ap-southeast-1")
    # parquet | ndjson | mixed (mixed: per node, alternating).
    format: str = "mixed"
    zipf_exponent: float = 1.1
    # Share of traffic over the private network (not billed as egress).
    private_network_share: float = 0.1
    seed: int = 7

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.nodes < 1 or self.accounts < 1 or self.rows_per_day < 0:
            raise ValueError("nodes and accounts must be >= 1 and rows_per_day >= 0")
        if not self.regions:
            raise ValueError("at least one region is needed")


@dataclass(frozen=True)
class FaultSpec:
    """Faults to inject. All rates default to 0: `FaultSpec()` is a perfectly clean fleet."""

    # An identical copy of a file under a new name (per file).
    redelivery_rate: float = 0.0
    # A corrected re-emission: the first file carries a preliminary version, a later file the
    # same event_id with a later emitted_at and the final values (per row).
    correction_rate: float = 0.0
    # Share of correction files uploaded (and named) before the file they correct.
    correction_first_rate: float = 0.5
    # Same event_id and emitted_at, different bytes, in another file (per row). Off by default.
    conflict_rate: float = 0.0
    # Files that arrive late (per file), or every file of these hours, or of these node-hours.
    late_rate: float = 0.0
    late_hours: tuple[int, ...] = ()
    late_node_hours: tuple[NodeHour, ...] = ()
    late_delay: timedelta = timedelta(days=2)
    # Truncated files (Parquet without its footer, gzip cut short), per file or node-hour.
    truncated_rate: float = 0.0
    truncated_node_hours: tuple[NodeHour, ...] = ()
    # Files missing a required column, per file or node-hour.
    missing_column_rate: float = 0.0
    missing_column_node_hours: tuple[NodeHour, ...] = ()
    # Share of broken (truncated / missing-column) files followed by a good copy.
    good_copy_rate: float = 0.5
    # Rows with exactly one broken field (per row), rule chosen from bad_row_rules.
    bad_row_rate: float = 0.0
    bad_row_rules: tuple[str, ...] = DEFAULT_BAD_ROW_RULES
    # Non-rollup objects under the prefix (per node-hour), kinds from STRAY_KINDS.
    stray_rate: float = 0.0
    stray_kinds: tuple[str, ...] = STRAY_KINDS
    # Node-hours that deliver nothing although the node served traffic.
    silent_rate: float = 0.0
    silent_node_hours: tuple[NodeHour, ...] = ()
    # Nodes whose rollups report under_report_factor of the bytes they served.
    under_reporting_nodes: tuple[str, ...] = ()
    under_report_factor: float = 0.8
    # Share of cache events the analytics queue loses.
    cache_event_drop_rate: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.bad_row_rules) - set(SUPPORTED_BAD_ROW_RULES)
        if unknown:
            raise ValueError(f"cannot inject rules {sorted(unknown)}")
        if set(self.stray_kinds) - set(STRAY_KINDS):
            raise ValueError(f"stray kinds must be among {STRAY_KINDS}")
        bands = self.bad_row_rate + self.correction_rate + self.conflict_rate
        if bands > 1:
            raise ValueError("bad_row_rate + correction_rate + conflict_rate must be <= 1")
        if not 0 < self.under_report_factor <= 1:
            raise ValueError("under_report_factor must be in (0, 1]")

    @classmethod
    def none(cls) -> FaultSpec:
        return cls()

    @classmethod
    def default(cls) -> FaultSpec:
        """A realistic mix: a bit of everything a production fleet does on a normal day."""
        return cls(
            redelivery_rate=0.03,
            correction_rate=0.005,
            late_rate=0.02,
            truncated_rate=0.005,
            missing_column_rate=0.003,
            bad_row_rate=0.0005,
            stray_rate=0.02,
            silent_rate=0.002,
            cache_event_drop_rate=0.01,
        )

    @classmethod
    def preset(cls, name: str) -> FaultSpec:
        presets = {"none": cls.none, "default": cls.default}
        if name not in presets:
            raise ValueError(f"unknown fault preset {name!r}; use one of {sorted(presets)}")
        return presets[name]()

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """`default`, `none`, or `[preset,]name=value,...`; lists separate items with `;`,
        node-hours as `node@hour`, late_delay in hours: `default,late_hours=3;4,bad_row_rate=0.01`.
        """
        items = [item.strip() for item in text.split(",") if item.strip()]
        base = cls.none()
        if items and "=" not in items[0]:
            base = cls.preset(items.pop(0))
        overrides = dict(_parse_item(item) for item in items)
        return replace(base, **overrides)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


FAULT_OPTIONS_HELP: dict[str, str] = {
    "redelivery_rate": "share of files re-delivered identically under a new name",
    "correction_rate": "share of rows re-emitted later with corrected values",
    "correction_first_rate": "share of correction files named/uploaded before the original",
    "conflict_rate": "share of rows given a twin with the same emitted_at, other bytes",
    "late_rate": "share of files that arrive late",
    "late_hours": "hours (0-23) whose files all arrive late, e.g. 3;4",
    "late_node_hours": "node@hour pairs whose files arrive late",
    "late_delay": "how much later late files arrive, in hours",
    "truncated_rate": "share of files cut short (unreadable Parquet / gzip)",
    "truncated_node_hours": "node@hour pairs whose first file is truncated",
    "missing_column_rate": "share of files missing a required column",
    "missing_column_node_hours": "node@hour pairs whose first file misses a column",
    "good_copy_rate": "share of broken files followed by a good copy",
    "bad_row_rate": "share of rows breaking exactly one rule of contract section 1",
    "bad_row_rules": "rules to break, e.g. bytes;direction ("
    + ";".join(SUPPORTED_BAD_ROW_RULES)
    + ")",
    "stray_rate": "share of node-hours with a stray object",
    "stray_kinds": "stray kinds, any of: " + ", ".join(STRAY_KINDS),
    "silent_rate": "share of node-hours delivering nothing",
    "silent_node_hours": "node@hour pairs delivering nothing",
    "under_reporting_nodes": "nodes reporting fewer bytes than they served",
    "under_report_factor": "share of the served bytes those nodes report",
    "cache_event_drop_rate": "share of cache events the analytics queue loses",
}


def _parse_item(item: str) -> tuple[str, Any]:
    name, _, raw = item.partition("=")
    name = name.strip()
    hints = get_type_hints(FaultSpec)
    if name not in hints:
        raise ValueError(f"unknown fault option {name!r}; options: {FaultSpec.field_names()}")
    kind = hints[name]
    values = [v.strip() for v in raw.split(";") if v.strip()]
    if kind is float:
        return name, float(raw)
    if kind is timedelta:
        return name, timedelta(hours=float(raw))
    if kind == tuple[int, ...]:
        return name, tuple(int(v) for v in values)
    if kind == tuple[NodeHour, ...]:
        pairs = [v.rpartition("@") for v in values]
        return name, tuple((node, int(hour)) for node, _, hour in pairs)
    return name, tuple(values)
