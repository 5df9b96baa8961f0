"""The heartbeat with a fake database and wave store: one beat per interval,
stopping or not, and an end when the run ends even with a wave left behind."""

from __future__ import annotations

import threading
import time
from typing import Any

from interpreter.run_context import RunContext, RunOptions
from interpreter.run_lifecycle import RunLifecycle


class CountingDb:
    def __init__(self) -> None:
        self.beats = 0

    def run(self, fn: Any, retry: bool = True) -> None:
        self.beats += 1


class LeftBehind:
    """A store with a leased wave nobody will ever commit (its lane died)."""

    def active_wave_ids(self) -> list[int]:
        return [7]


class NoProbes:
    def renew_probes(self, c: Any) -> None:
        pass


def control(lease_s: float) -> tuple[RunLifecycle, CountingDb, RunContext]:
    db = CountingDb()
    ctx = RunContext(db, None, RunOptions(lease_s=lease_s), "w1", threading.Event())  # type: ignore[arg-type]
    return RunLifecycle(ctx, LeftBehind(), NoProbes()), db, ctx  # type: ignore[arg-type]


def test_heartbeat_keeps_its_interval_after_stop():
    rc, db, ctx = control(lease_s=1.5)   # a beat every 0.5 s
    rc.start_heartbeat()
    ctx.stop.set()
    time.sleep(1.3)
    beats = db.beats
    rc.end_heartbeat()
    assert 1 <= beats <= 3, f"{beats} beats in 1.3 s"


def test_heartbeat_ends_with_the_run_even_with_a_leased_wave_left():
    rc, db, ctx = control(lease_s=1.5)
    thread = rc.start_heartbeat()
    ctx.stop.set()
    t0 = time.monotonic()
    rc.end_heartbeat(timeout=5)
    assert not thread.is_alive() and time.monotonic() - t0 < 1
    beats = db.beats
    time.sleep(0.7)
    assert db.beats == beats
