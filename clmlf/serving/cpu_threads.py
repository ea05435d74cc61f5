"""How many intra-op threads the model gets: decided once at start-up from the CPU quota.

A container limited to 2 CPUs on a 64-core node still sees 64 cores, and torch would
start 64 OpenMP threads that the CFS quota then throttles. The choice, first match wins:

1. an explicit ``--threads N`` (or ``CLMLF_THREADS``);
2. ``OMP_NUM_THREADS`` in the environment (torch already honours it; we only report it);
3. the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``),
   rounded down, at least 1;
4. the CPUs this process may run on (``sched_getaffinity``).

Never more than (4). The cgroup root and the environment are parameters, so tests
can play any container.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("clmlf.threads")

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "--threads", "OMP_NUM_THREADS", "cgroup quota 1.5 CPUs", "4 usable CPUs"

    def describe(self) -> str:
        return f"torch intra-op threads {self.threads} (from {self.source})"


def parse_threads(text: str | int | None) -> int | None:
    """``auto`` / empty -> None, else a thread count 1..1024 (ValueError otherwise)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto")):
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"threads must be auto or a whole number, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise ValueError(f"threads must be between 1 and 1024, got {value}")
    return value


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _v2_limit(text: str | None) -> float | None:
    """``cpu.max`` content ``"150000 100000"`` -> 1.5; ``"max 100000"`` -> None."""
    parts = (text or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, self_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup path, or None when unlimited.

    ``self_cgroup`` is the text of /proc/self/cgroup (read when None). Inside a container the
    namespace makes the own cgroup the root, so ``root/cpu.max`` is the usual hit.
    """
    if self_cgroup is None:
        self_cgroup = _read(Path("/proc/self/cgroup")) or ""
    limits: list[float] = []
    for line in self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.strip().lstrip("/")
        if hierarchy == "0" and controllers == "":  # cgroup v2
            base = root
        elif "cpu" in controllers.split(","):  # cgroup v1
            base = next((root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / name).is_dir()),
                        root / "cpu")
        else:
            continue
        directory = base / relative if relative else base
        while True:  # the own cgroup and every parent up to the mount point
            limit = _v2_limit(_read(directory / "cpu.max")) if base is root else _v1_limit(directory)
            if limit is not None:
                limits.append(limit)
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent
    if not limits:  # no /proc/self/cgroup match: look at the mount point itself
        for limit in (_v2_limit(_read(root / "cpu.max")), _v1_limit(root / "cpu")):
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(
    requested: int | None,
    env: Mapping[str, str] | None = None,
    quota: float | None = None,
    cpus: int | None = None,
) -> ThreadChoice:
    """The thread count by the rules of the module docstring (pure: pass what was measured)."""
    env = os.environ if env is None else env
    cpus = usable_cpus() if cpus is None else cpus
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    omp = (env.get("OMP_NUM_THREADS") or "").strip()
    if omp:
        try:
            return ThreadChoice(max(1, int(omp.split(",")[0])), "OMP_NUM_THREADS")
        except ValueError:
            pass
    if quota is not None:
        return ThreadChoice(max(1, min(cpus, math.floor(quota + 1e-9))), f"cgroup quota {quota:g} CPUs")
    return ThreadChoice(cpus, f"{cpus} usable CPUs")


def configure_threads(requested: int | None, root: Path = CGROUP_ROOT, logger: logging.Logger = log) -> ThreadChoice:
    """Choose, apply (``torch.set_num_threads``) and log the intra-op thread count; call once at start-up."""
    import torch

    choice = choose_threads(requested, quota=cgroup_cpu_limit(root))
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    wait = os.environ.get("OMP_WAIT_POLICY", "")
    logger.info("%s%s", choice.describe(), f", OMP_WAIT_POLICY={wait}" if wait else "")
    return choice
