"""The model lane with a fake wave store, breaker and generation: when a commit
fails, the lane stops the run and gives back the wave it had claimed ahead."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from interpreter import model_lane
from interpreter.actor_api import StepResult
from interpreter.model_lane import ModelLane
from interpreter.run_context import RunContext, RunOptions


class FakeStep:
    number = 1


class FakeWave:
    def __init__(self, wave_id: int):
        self.wave_id = wave_id
        self.step = FakeStep()
        self.model = None
        self.subjects = [f"s{wave_id}"]
        self.wf = None  # the definition it was claimed under; the fake generation ignores it


class FailingCommits:
    """Claims a new wave each time; every commit fails (say the database refused it)."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.claimed: list[int] = []
        self.committed: list[int] = []
        self.released: list[int] = []

    def claim(self) -> FakeWave:
        wave = FakeWave(next(self.ids))
        self.claimed.append(wave.wave_id)
        return wave

    def commit(self, wave: FakeWave, *args: Any) -> int:
        self.committed.append(wave.wave_id)
        raise RuntimeError("commit failed")

    def release(self, wave: FakeWave) -> None:
        self.released.append(wave.wave_id)


class FakePool:
    loads = switches = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


class FakeWorkflow:
    def model_of(self, step: Any) -> None:
        return None


def test_a_failed_commit_stops_the_lane_and_releases_the_prefetched_wave(monkeypatch):
    generated: list[int] = []

    def generate(pool, wf, step, subjects, should_stop):
        generated.append(int(subjects[0][1:]))
        time.sleep(0.02)
        return [StepResult(subjects[0], True, "DONE")]

    monkeypatch.setattr(model_lane, "ModelPool", FakePool)
    monkeypatch.setattr(model_lane, "run_model_wave", generate)
    store = FailingCommits()
    ctx = RunContext(None, FakeWorkflow(), RunOptions(), "w1",  # type: ignore[arg-type]
                     threading.Event())
    lane = ModelLane(ctx, store, breaker=None)  # type: ignore[arg-type]
    monkeypatch.setattr(lane, "claim_next", store.claim)
    lane.main()
    assert isinstance(ctx.model_error, RuntimeError) and ctx.stop.is_set()
    # Every wave was generated, or else given back: none is left leased by a live
    # heartbeat. The ones whose commit failed are left to their leases.
    never_run = [w for w in store.claimed if w not in generated]
    assert never_run and store.released == never_run
    assert set(store.committed) <= set(generated)

