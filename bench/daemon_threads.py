"""The daemon (`python -m usage_etl.daemon`) with its CPU split by thread: which of Dagster's
daemons (one thread each, `dagster-daemon-<TYPE>`) and helper threads burn it.

    .venv/bin/python -m bench.daemon_threads OUT.json run -m usage_etl.definitions

Runs the project's daemon entry point unchanged in this process and, every 2 s, reads each
thread's user + system CPU from /proc/self/task/<tid>/stat, keyed by the Python thread's
name (threads that share a name are summed; a thread's CPU is as last seen, so the last 2 s
of a thread that ends are missed), and rewrites OUT.json. `bench.backfill_bench
--daemon-threads OUT.json` starts the deployment's daemon this way.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _thread_cpu(tid: int) -> float | None:
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def sample_forever(out: Path, stop: threading.Event, every: float = 2.0) -> None:
    seen: dict[int, tuple[str, float]] = {}
    while not stop.wait(every):
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        for tid in (int(p.name) for p in Path("/proc/self/task").iterdir()):
            cpu = _thread_cpu(tid)
            if cpu is not None:
                name = names.get(tid) or (seen[tid][0] if tid in seen else f"native-{tid}")
                seen[tid] = (name, cpu)
        by_name: dict[str, float] = {}
        for name, cpu in seen.values():
            name = re.sub(r"[-_]\d+$", "", name)  # a pool's workers under one name
            by_name[name] = round(by_name.get(name, 0.0) + cpu, 2)
        total = sum(by_name.values())
        ordered = dict(sorted(by_name.items(), key=lambda item: -item[1]))
        out.write_text(json.dumps({"total": round(total, 2), "by_thread": ordered}, indent=2))


def main() -> None:
    out = Path(sys.argv[1])
    stop = threading.Event()
    threading.Thread(target=sample_forever, args=(out, stop), name="thread-cpu-sampler",
                     daemon=True).start()  # fmt: skip
    from usage_etl.daemon import main as daemon_main

    daemon_main(sys.argv[2:])


if __name__ == "__main__":
    main()
