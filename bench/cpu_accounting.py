"""CPU seconds by thread (this process) and by process (broker, Redis), read from /proc (Linux only).

Where the CPU of a timed interval went, per component of the stream: the model worker
thread and torch's OpenMP pool, the consumer loop, the image stage, the sink writer, and
the co-located broker and Redis processes (which a production member does not share its
cores with). Used by bench/pipeline.py.

    before = CpuSample.take({"broker": broker_pid})
    ...                                       # the timed work (threads still alive at the end)
    after = CpuSample.take({"broker": broker_pid})
    after.minus(before)                       # {"model-worker": 1.9, "openmp/native": 2.4, ...}
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path: Path) -> float | None:
    """utime + stime of one /proc stat file, in seconds (None once the task is gone)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def component_of(thread_name: str | None) -> str:
    """The stream component a thread belongs to, by its Python thread name (None: a native thread)."""
    if thread_name is None:
        return "openmp/native"
    for prefix, component in (("model-worker", "model-worker"), ("image", "image-stage"),
                              ("sink-writer", "sink-writer"), ("consumer-loop", "consumer-loop"),
                              ("MainThread", "main"), ("predict-path", "main")):
        if thread_name.startswith(prefix):
            return component
    return "other:" + re.sub(r"[-_ ]?\d+", "", thread_name).split(" (")[0]


@dataclass
class CpuSample:
    """CPU seconds so far of every thread of this process (by id, with its component) and of named processes."""

    threads: dict[int, tuple[str, float]] = field(default_factory=dict)
    processes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def take(cls, processes: dict[str, int | None] | None = None) -> CpuSample:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        threads = {}
        for task in Path("/proc/self/task").iterdir():
            seconds = _stat_cpu(task / "stat")
            if seconds is not None:
                tid = int(task.name)
                threads[tid] = (component_of(names.get(tid)), seconds)
        procs = {}
        for name, pid in (processes or {}).items():
            seconds = _stat_cpu(Path(f"/proc/{pid}/stat")) if pid else None
            if seconds is not None:
                procs[name] = seconds
        return cls(threads, procs)

    def minus(self, before: CpuSample) -> dict[str, float]:
        """CPU seconds per component (and per named process) between ``before`` and this sample."""
        out: dict[str, float] = {}
        for tid, (component, seconds) in self.threads.items():
            start = before.threads.get(tid, (component, 0.0))[1]
            out[component] = out.get(component, 0.0) + max(0.0, seconds - start)
        for name, seconds in self.processes.items():
            out[name] = max(0.0, seconds - before.processes.get(name, 0.0))
        return out
