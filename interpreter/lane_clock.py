"""What a lane is doing at every moment, kept in memory as contiguous intervals.

The model lane tells its clock each time it starts doing something else
(`enter`); a model load or switch, which it only learns about once it is over
(with its duration), is cut out of the interval it happened in afterwards
(`took`). The utilisation recorder writes the intervals to interp.lane_intervals
every few seconds (`pending` / `written`), never one statement per interval:
the interval still running is written too and extended by the next write, so
a live view is at most one write behind.

Intervals always meet end to start, so that together they cover the lane's
whole time. The clock costs a lock and a few attributes per change, nothing
per wave beyond that.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import InvalidValue

CAUSES = ("generating", "loading", "switching", "waiting_claim", "breaker", "limited",
          "waiting_commit", "idle", "paused")
# An interval shorter than this is not kept as its own row: the next cause takes
# it over (its start stays, so the intervals still meet).
MIN_INTERVAL_S = 0.001
# A load is reported by the generation thread, which starts a wave a moment after
# the lane thread entered "generating" for it (the hand-over to the executor,
# several ms on a loaded machine). A piece of the interval that short before the
# load is that hand-over, not generation: the load takes it over, so a wave's
# subjects are not counted in two generating intervals.
HANDOVER_S = 0.05


@dataclass(eq=False)  # compared by identity: two intervals may look alike
class Interval:
    cause: str
    started: float                   # wall-clock seconds (epoch)
    ended: float | None = None       # None while it runs
    model: str | None = None
    step: int | None = None
    subjects: int | None = None
    row_id: int | None = None        # its interp.lane_intervals id, once written
    version: int = 0                 # bumped by every change, to know what to write again

    def meta(self) -> tuple[str | None, int | None, int | None]:
        return (self.model, self.step, self.subjects)

    def row(self, now: float) -> dict[str, object]:
        """As written now: a running interval ends at the time of the write."""
        return {"id": self.row_id, "cause": self.cause, "model": self.model, "step": self.step,
                "subjects": self.subjects, "started": self.started,
                "ended": self.ended if self.ended is not None else max(now, self.started)}


class LaneClock:
    def __init__(self, lane: str = "model", enabled: bool = True):
        self.lane = lane
        self.enabled = enabled
        self._lock = threading.Lock()
        self._current: Interval | None = None
        self._unwritten: list[Interval] = []     # ended, and changed since their last write
        self._finished = False
        # Wall-clock time from the monotonic clock, so that intervals never run
        # backwards when the system clock is adjusted during a run.
        self._epoch = time.time() - time.monotonic()

    def now(self) -> float:
        return self._epoch + time.monotonic()

    @property
    def started(self) -> bool:
        return self._current is not None or self._finished

    @property
    def cause(self) -> str | None:
        current = self._current
        return current.cause if current is not None else None

    # ------------------------------------------------------------ recording

    def enter(self, cause: str, *, model: str | None = None, step: int | None = None,
              subjects: int | None = None, new: bool = False) -> None:
        """From now on the lane does `cause`. The same cause with the same details
        goes on in the same interval, unless `new` (a wave is an interval of its own)."""
        if not self.enabled:
            return
        if cause not in CAUSES:
            raise InvalidValue(f"unknown lane cause {cause!r}")
        with self._lock:
            if self._finished:
                return
            now = self.now()
            current = self._current
            if current is None:
                self._current = Interval(cause, now, model=model, step=step, subjects=subjects)
                return
            if not new and current.cause == cause and current.meta() == (model, step, subjects):
                return
            if now - current.started < MIN_INTERVAL_S:
                # Too short to keep: the new cause takes it over from its start.
                current.cause, current.model, current.step, current.subjects = \
                    cause, model, step, subjects
                current.version += 1
                return
            self._close(current, now)
            self._current = Interval(cause, now, model=model, step=step, subjects=subjects)

    def took(self, cause: str, seconds: float, *, model: str | None = None) -> None:
        """The last `seconds` (up to now) were spent on `cause` (a model load that just
        ended), inside the interval that runs now: that interval is cut there, and
        what it was doing resumes from now."""
        if not self.enabled or seconds <= 0:
            return
        with self._lock:
            current = self._current
            if self._finished or current is None:
                return
            now = self.now()
            cut = max(current.started, now - seconds)
            if cut - current.started < max(MIN_INTERVAL_S,
                                           HANDOVER_S if current.cause == "generating" else 0):
                # It took the whole interval: that interval becomes the load.
                resumed = Interval(current.cause, now, model=current.model, step=current.step,
                                   subjects=current.subjects)
                current.cause, current.model, current.step, current.subjects = \
                    cause, model, None, None
                self._close(current, now)
            else:
                resumed = Interval(current.cause, now, model=current.model, step=current.step,
                                   subjects=current.subjects)
                self._close(current, cut)
                self._close(Interval(cause, cut, model=model), now)
            self._current = resumed

    def relabel_last(self, was: str, becomes: str) -> None:
        """The interval that just ended as `was` was in fact `becomes` (a load turns
        out to have been a switch from another model)."""
        if not self.enabled:
            return
        with self._lock:
            current = self._current
            if current is None or not self._unwritten:
                return
            last = self._unwritten[-1]
            if last.cause == was and last.ended == current.started:
                last.cause = becomes
                last.version += 1

    def finish(self) -> None:
        """Ends the last interval now; later calls record nothing."""
        with self._lock:
            if self._current is not None:
                self._close(self._current, self.now())
                self._current = None
            self._finished = True

    def _close(self, interval: Interval, at: float) -> None:
        interval.ended = at
        interval.version += 1
        if interval not in self._unwritten:
            self._unwritten.append(interval)

    # ------------------------------------------------------------ writing

    def pending(self) -> list[tuple[Interval, int, dict[str, object]]]:
        """What to write now: the ended intervals not written as they are, and the
        running one. Each as (interval, its version, its row)."""
        with self._lock:
            now = self.now()
            out = [(i, i.version, i.row(now)) for i in self._unwritten]
            if self._current is not None:
                out.append((self._current, self._current.version, self._current.row(now)))
            return out

    def written(self, done: list[tuple[Interval, int, int]]) -> None:
        """Marks intervals written (interval, version written, row id): an ended one
        not changed since is dropped from memory."""
        with self._lock:
            for interval, version, row_id in done:
                interval.row_id = row_id
                if interval.ended is not None and interval.version == version \
                        and interval in self._unwritten:
                    self._unwritten.remove(interval)
