"""How many of this machine's CPUs are idle, from the kernel's counters (Linux ``/proc/stat``).

The first line of /proc/stat counts, since boot, the jiffies all CPUs together spent in each state;
idle CPUs over an interval = n_cpus x (idle + iowait jiffies) / (all jiffies) between two readings.
Guest time is already inside user time, so only the first eight fields are summed. Where /proc/stat
cannot be read (not Linux) every function returns None and callers behave as if nothing were idle.
"""

from __future__ import annotations

import os
import time

PROC_STAT = os.path.join(os.sep, "proc", "stat")


def cpu_ticks() -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies of all CPUs since boot; None where /proc/stat cannot be read."""
    try:
        with open(PROC_STAT) as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks[:8])
    except (OSError, ValueError, IndexError):
        return None


def idle_cpus_between(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """CPUs idle on average between two cpu_ticks() readings; None if either is missing or no time passed."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (os.cpu_count() or 1) * (after[0] - before[0]) / (after[1] - before[1])


def idle_cpus(interval_s: float = 0.25) -> float | None:
    """CPUs idle right now: the average over the next `interval_s` seconds."""
    before = cpu_ticks()
    time.sleep(interval_s)
    return idle_cpus_between(before, cpu_ticks())


__all__ = ["cpu_ticks", "idle_cpus", "idle_cpus_between"]
