"""PNG chart of a usage report's series: egress, ingress and requests, one line per region.

Rendered with matplotlib's Agg canvas (no display, no pyplot global state). Floats appear only
here, as plot coordinates; every number the command prints stays an exact integer.
"""

from __future__ import annotations

from pathlib import Path

from usage_etl.usage.read_api import Granularity, UsageReport

BYTE_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))
PANELS = (("egress_bytes", "Egress"), ("ingress_bytes", "Ingress"), ("requests", "Requests"))


def byte_unit(largest: int) -> tuple[str, int]:
    """The largest binary unit that keeps the axis above 1."""
    return next((name, size) for name, size in BYTE_UNITS if largest >= size or size == 1)


def write_chart(report: UsageReport, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(PANELS), 1, sharex=True)
    hourly = report.window.granularity is Granularity.hour
    buckets = report.window.buckets()
    for ax, (metric, title) in zip(axes, PANELS, strict=True):
        values = {r: [0] * len(buckets) for r in report.regions}
        index = {bucket: i for i, bucket in enumerate(buckets)}
        for point in report.series:
            values[point.region][index[point.bucket]] = point.totals.get(metric)
        largest = max((max(v) for v in values.values()), default=0)
        unit, size = ("requests", 1) if metric == "requests" else byte_unit(largest)
        for region, series in values.items():
            ax.plot(buckets, [v / size for v in series], marker="o", markersize=3, label=region)
        ax.set_title(title, loc="left")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    if report.regions:
        axes[0].legend(title="region", loc="upper right")
    axes[-1].set_xlabel("hour (UTC)" if hourly else "day (UTC)")
    figure.autofmt_xdate()
    figure.suptitle(f"{_subject(report)}  {report.window.label}", x=0.01, ha="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _subject(report: UsageReport) -> str:
    query = report.query
    parts = [f"account {query.account_id}"]
    if query.project_id is not None:
        parts.append(f"project {query.project_id or '(none)'}")
    if query.artifact_kind is not None:
        parts.append(f"kind {query.artifact_kind}")
    return ", ".join(parts)
