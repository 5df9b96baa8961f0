"""What every room of a run shares: its options, its identity, its current
definition, its stop signal and its tally.

The run loop's parts (wave store, breaker, run lifecycle, the two lanes) each
hold the same RunContext rather than a reference to the Runner, so none of
them depends on the class that composes them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .db import Database
from .definitions import Workflow
from .lane_clock import LaneClock

# The lowest priority a subject can have (subject_state.priority is an integer).
PRIORITY_MIN = -(2 ** 31)


@dataclass
class RunOptions:
    batch_size: int = 100
    model_batch_size: int = 8
    limit: int | None = None
    until_idle: bool = False
    worker_id: str | None = None
    lease_s: float = 60.0
    poll_s: float = 1.0
    # Seconds between admissions of new subjects, backlog or not (None: poll_s);
    # admission.py, docs/running.md "Admission".
    admit_every_s: float | None = None
    switch_ratio: float = 4.0       # switch models only for a backlog this many times larger
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    model_memory_mb: int = 4096
    validate: bool = True
    # Record the model lane's intervals and sample the hardware (docs/ops.md, "Timeline").
    timeline: bool = True
    # Take only subjects of at least this priority (None: any); docs/running.md, "Priorities".
    priority_at_least: int | None = None

    @property
    def min_priority(self) -> int:
        """The lowest priority this run takes, as the claim queries compare it."""
        return PRIORITY_MIN if self.priority_at_least is None else self.priority_at_least


@dataclass
class RunSummary:
    run_id: int
    worker_id: str
    waves: int = 0
    checkpoints: int = 0
    admitted: int = 0
    status: str = "finished"
    by_step: dict[int, int] = field(default_factory=dict)
    model_loads: int = 0
    model_switches: int = 0


@dataclass
class RunContext:
    db: Database
    wf: Workflow                      # replaced when the definition changes during the run
    opt: RunOptions
    worker_id: str
    stop: threading.Event
    run_id: int | None = 0            # 0 until the run is recorded
    summary: RunSummary | None = None
    # Set while the model lane holds a wave, so the cheap lane does not call the
    # run idle while a model generates.
    model_busy: threading.Event = field(default_factory=threading.Event)
    model_error: BaseException | None = None
    # What the model lane is doing at every moment; the utilisation recorder writes it.
    lane_clock: LaneClock = field(default_factory=LaneClock)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_wave(self, step: int, checkpoints: int) -> None:
        """Adds a committed wave to the summary (both lanes commit, from different threads)."""
        if self.summary is None:
            return
        with self._lock:
            self.summary.waves += 1
            self.summary.checkpoints += checkpoints
            self.summary.by_step[step] = self.summary.by_step.get(step, 0) + checkpoints

    def count_admitted(self, n: int) -> None:
        """Adds admitted subjects to the summary (the admission thread and the cheap
        lane both admit)."""
        if self.summary is None:
            return
        with self._lock:
            self.summary.admitted += n

    def admission_left(self) -> int | None:
        """How many more subjects --limit lets this run admit (None: no limit)."""
        if self.opt.limit is None:
            return None
        return max(0, self.opt.limit - (self.summary.admitted if self.summary else 0))
