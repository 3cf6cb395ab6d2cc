"""CPU seconds of other processes (a server the benchmark started), for the in-process benches."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def processes_cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system seconds of `processes` and their reaped children; gone ones count 0."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process `pid` and every process below it."""
    root = psutil.Process(pid)
    return processes_cpu_seconds([root, *root.children(recursive=True)])
