"""How many CPUs the other processes leave free right now: the threads for a prompt.

Prompt processing is compute-bound and scales with cores, but a thread on a core
that another process uses only waits for it (on a shared 2-core machine, llama.cpp
with 2 threads ran far slower than with 1 while other processes used the CPU). The
1-minute load average, read once when the model loads, says too little: it lags by
minutes, and right after another job ends it still counts that job, so a model
loaded then decoded every prompt of the run on 1 thread of 2 idle ones.

`IdleCpus` measures instead, before each prompt, the CPU time the *other*
processes used since its last reading (the machine's busy time, steal included,
less this process's own): this process's own generation thread is not "others",
so it does not talk itself out of its cores. Its own deltas, not psutil's shared
``cpu_percent`` state, which the run's sampler thread reads too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import psutil

# Readings closer together than this say little (a scheduler tick is 4-10 ms);
# between them the last answer stands.
MIN_WINDOW_S = 0.5


@dataclass(frozen=True)
class Reading:
    at: float          # monotonic seconds
    busy: float        # the machine's non-idle CPU seconds since boot
    own: float         # this process's CPU seconds


class IdleCpus:
    """CPUs left free by other processes, measured over the time since the last call."""

    def __init__(self, cpus: int):
        self.cpus = cpus
        self.process = psutil.Process()
        self.last = self.read()
        self.value: float | None = None

    def read(self) -> Reading:
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        own = self.process.cpu_times()
        return Reading(time.monotonic(), busy, own.user + own.system)

    def idle(self) -> float | None:
        """Free CPUs (0..cpus) over the window since the last reading; None until a
        window of MIN_WINDOW_S has passed since this object was made."""
        now = self.read()
        wall = now.at - self.last.at
        if wall < MIN_WINDOW_S:
            return self.value
        others = max(0.0, (now.busy - self.last.busy) - (now.own - self.last.own)) / wall
        self.last = now
        self.value = max(0.0, min(float(self.cpus), self.cpus - others))
        return self.value


def threads_for(idle: float, cpus: int, cap: int = 16) -> int:
    """Threads for a compute-bound decode on `idle` free CPUs: rounded up (a CPU 30%
    used by others still gives most of itself), at least 1, at most cpus and cap."""
    return max(1, min(cap, cpus, math.ceil(idle - 1e-9)))
