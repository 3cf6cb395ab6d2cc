"""How reconciliation findings read to an operator: markdown tables, totals and one-line
descriptions naming the worst offenders. Pure formatting, no ClickHouse."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import dagster as dg

from usage_etl.reconciliation.compare import (
    GroupDiff,
    KindSummary,
    NodeHourCoverage,
    Reconciliation,
    Status,
)

DIRECTION_LABEL = {"download": "egress/download", "upload": "ingress/upload"}
UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def human_bytes(value: int) -> str:
    """1536 -> '1.50 KiB' (display only; the exact integers are in the tables)."""
    sign, size = ("-" if value < 0 else ""), abs(value)
    for unit, scale in UNITS:
        if size >= scale:
            return f"{sign}{(Decimal(size) / scale).quantize(Decimal('0.01'))} {unit}"
    return f"{sign}{size} B"


def _ratio(value: Decimal | None) -> str:
    return "no cache events" if value is None else str(value)


def _signed(value: int) -> str:
    return f"{value:+,}"


def worst_table(groups: list[GroupDiff]) -> str:
    lines = [
        "| # | status | account | project | kind | direction | rollup bytes | cache bytes "
        "| difference | ratio | nodes (share of rollup bytes) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for rank, g in enumerate(groups, 1):
        lines.append(
            f"| {rank} | {g.status.upper()} | {g.account_id} | {g.project_id} | "
            f"{g.artifact_kind} | {DIRECTION_LABEL[g.action]} | {g.rollup_bytes:,} | "
            f"{g.cache_bytes:,} | {_signed(g.difference)} ({human_bytes(g.difference)}) | "
            f"{_ratio(g.ratio)} | {_node_shares(g)} |"
        )
    return "\n".join(lines)


def _node_shares(g: GroupDiff, limit: int = 5) -> str:
    if not g.nodes:
        return "none"
    shares = [
        f"{node} {(Decimal(100 * size) / g.rollup_bytes).quantize(Decimal('0.1'))}%"
        for node, size in g.nodes[:limit]
        if g.rollup_bytes
    ]
    more = f", +{len(g.nodes) - limit} more" if len(g.nodes) > limit else ""
    return ", ".join(shares) + more


def kinds_table(kinds: list[KindSummary]) -> str:
    lines = [
        "| kind | direction | rollup bytes | cache bytes | difference | ratio | groups "
        "| error | warn |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in kinds:
        lines.append(
            f"| {k.artifact_kind} | {DIRECTION_LABEL[k.action]} | {k.rollup_bytes:,} | "
            f"{k.cache_bytes:,} | {_signed(k.difference)} ({human_bytes(k.difference)}) | "
            f"{_ratio(k.ratio)} | {k.groups} | {k.error_groups} | {k.warn_groups} |"
        )
    return "\n".join(lines)


def _offender(g: GroupDiff) -> str:
    nodes = ", ".join(node for node, _ in g.nodes[:5]) or "none"
    return (
        f"account {g.account_id} project {g.project_id} ({g.artifact_kind} "
        f"{DIRECTION_LABEL[g.action]}: {human_bytes(g.difference)}, ratio {_ratio(g.ratio)}, "
        f"rollups from nodes {nodes})"
    )


def _worst(offenders: str) -> str:
    """` Worst: ….` or nothing: the offender list keeps only the largest differences overall,
    so one side's list can be empty."""
    return f" Worst: {offenders}." if offenders else ""


def reconciliation_description(rec: Reconciliation, names: int = 3) -> str:
    if rec.groups == 0:
        return f"{rec.day}: no project-bound rollups and no cache events to compare."
    if rec.status is Status.OK:
        return (
            f"{rec.day}: all {rec.groups} groups within tolerance "
            f"(rollups {human_bytes(rec.rollup_bytes)}, cache events "
            f"{human_bytes(rec.cache_bytes)})."
        )
    parts = []
    if rec.error_groups:
        worst = "; ".join(_offender(g) for g in rec.offenders(Status.ERROR)[:names])
        parts.append(
            f"{rec.error_groups} group(s) with rollups BELOW cache events (nodes lost rollups, "
            f"revenue leak).{_worst(worst)}"
        )
    if rec.warn_groups:
        worst = "; ".join(_offender(g) for g in rec.offenders(Status.WARN)[:names])
        parts.append(
            f"{rec.warn_groups} group(s) with rollups ABOVE cache events (analytics dropped "
            f"events, or double counting).{_worst(worst)}"
        )
    return f"{rec.day}: " + " ".join(parts)


ACTION_HINT = (
    "ERROR rows: find the project's node(s) in usage_daily for the day, check the completeness "
    "check and the quarantine (quarantined_rows) for their files, re-deliver missing rollups and "
    "re-run the day. WARN rows: compare with the analytics queue's drop counters; if analytics "
    "is complete, look for the same traffic reported by two nodes (double counting)."
)


def reconciliation_metadata(rec: Reconciliation) -> dict[str, Any]:
    t = rec.tolerances
    return {
        "day": dg.MetadataValue.text(rec.day.isoformat()),
        "groups_checked": dg.MetadataValue.int(rec.groups),
        "groups_error": dg.MetadataValue.int(rec.error_groups),
        "groups_warn": dg.MetadataValue.int(rec.warn_groups),
        "rollup_bytes": dg.MetadataValue.int(rec.rollup_bytes),
        "cache_bytes": dg.MetadataValue.int(rec.cache_bytes),
        "difference_bytes": dg.MetadataValue.int(rec.rollup_bytes - rec.cache_bytes),
        "ratio": dg.MetadataValue.text(_ratio(rec.ratio)),
        "worst_groups": dg.MetadataValue.md(worst_table(rec.worst)),
        "by_artifact_kind": dg.MetadataValue.md(kinds_table(rec.kinds)),
        "tolerances": dg.MetadataValue.json(
            {
                "error_when": f"rollups < cache x (1 - {t.error_relative}) and "
                f"cache - rollups > {t.error_absolute_bytes} bytes",
                "warn_when": f"rollups > cache x (1 + {t.warn_relative}) and "
                f"rollups - cache > {t.warn_absolute_bytes} bytes",
            }
        ),
        "what_to_do": dg.MetadataValue.text(ACTION_HINT),
    }


def _hours(hours: list[int]) -> str:
    return ", ".join(f"{h:02d}" for h in hours)


def gaps_table(comp: NodeHourCoverage) -> str:
    lines = [
        "| node | missing hours (UTC) | count | of which quarantined |",
        "|---|---|---:|---|",
    ]
    for gap in comp.gaps:
        lines.append(
            f"| {gap.node_id} | {_hours(gap.missing_hours)} | {len(gap.missing_hours)} | "
            f"{_hours(gap.quarantined_hours) or '-'} |"
        )
    return "\n".join(lines)


def completeness_description(comp: NodeHourCoverage, names: int = 5) -> str:
    if comp.nodes == 0:
        return f"{comp.day}: no rollup objects loaded or quarantined for this day yet."
    if not comp.gap_nodes:
        return f"{comp.day}: all {comp.nodes} reporting nodes delivered all 24 hours."
    listed = "; ".join(f"{g.node_id} hours {_hours(g.missing_hours)}" for g in comp.gaps[:names])
    more = f" (+{comp.gap_nodes - names} more nodes)" if comp.gap_nodes > names else ""
    return (
        f"{comp.day}: {comp.missing_node_hours} node-hour(s) without a loaded rollup file on "
        f"{comp.gap_nodes} of {comp.nodes} nodes: {listed}{more}."
    )


COMPLETENESS_HINT = (
    "A missing hour means no loaded file under date=DAY/hour=HH/node=NODE. If it is listed as "
    "quarantined, read quarantined_rows for the file's reason; otherwise ask the node's owner "
    "to re-deliver (late files are fine) and re-run the day."
)


def completeness_metadata(comp: NodeHourCoverage) -> dict[str, Any]:
    metadata = {
        "day": dg.MetadataValue.text(comp.day.isoformat()),
        "nodes_reporting": dg.MetadataValue.int(comp.nodes),
        "nodes_with_gaps": dg.MetadataValue.int(comp.gap_nodes),
        "missing_node_hours": dg.MetadataValue.int(comp.missing_node_hours),
        "missing_node_hours_table": dg.MetadataValue.md(gaps_table(comp)),
        "objects_loaded": dg.MetadataValue.int(comp.objects_loaded),
        "objects_quarantined": dg.MetadataValue.int(comp.objects_quarantined),
        "objects_ignored": dg.MetadataValue.int(comp.objects_ignored),
        "newest_object_last_modified": dg.MetadataValue.text(
            comp.newest_last_modified.isoformat() if comp.newest_last_modified else "none"
        ),
        "what_to_do": dg.MetadataValue.text(COMPLETENESS_HINT),
    }
    if comp.newest_after_day_end is not None:  # negative: last hours may still be on their way
        seconds = int(comp.newest_after_day_end.total_seconds())
        metadata["newest_object_seconds_after_day_end"] = dg.MetadataValue.int(seconds)
    return metadata
