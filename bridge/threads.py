"""How many CPU threads torch may use, chosen from the cores this process may run on.

torch starts one OpenMP thread per core, and its threads wait for each other at every
operation.  When another busy process (TouchDesigner, a second run, a render farm job) holds
one core, every operation waits for the thread that lost its core: a 20-step run of the
built-in model went from 0.5 s to 2–14 s beside one busy process on 2 cores, while one thread
fewer than the cores lost nothing on a quiet machine (``python bench/threads.py``).
So the default leaves one core free: ``threads = usable cores − 1`` (at least 1).

"Usable cores" honours the CPU affinity mask (``taskset``) and a cgroup CPU quota (containers).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

AUTO = 0
MAX_THREADS = 1024
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 quota if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cpu_max)
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota(cpu_max: Path) -> int:
    """``cpu.max`` holds "QUOTA PERIOD" or "max PERIOD"; 0 when unlimited or unreadable."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return 0 if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return 0


def choose_threads(requested: int = AUTO, cores: int | None = None) -> int:
    """``requested`` threads, or for :data:`AUTO` one fewer than the usable cores (at least 1)."""
    if requested:
        return requested
    cores = usable_cores() if cores is None else cores
    return max(1, cores - 1)


def apply_threads(requested: int = AUTO) -> int:
    """Set torch's intra-op threads; returns the number set."""
    import torch

    n = choose_threads(requested)
    torch.set_num_threads(n)
    how = "--threads" if requested else f"auto: {usable_cores()} usable cores, one left free; --threads N to change"
    log.info("torch CPU threads: %d (%s)", n, how)
    return n
