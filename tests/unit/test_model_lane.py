"""The model lane with a fake wave store, breaker and generation: when a commit
fails, the lane stops the run and gives back the wave it had claimed ahead; a
wave claims enough subjects to fill the model's parallel slots."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from interpreter import model_lane
from interpreter.actor_api import StepResult
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow
from interpreter.llm.llama_backend import DEFAULT_GPU_PARALLEL
from interpreter.llm.remote import DEFAULT_REMOTE_PARALLEL
from interpreter.model_lane import ModelLane, model_slots
from interpreter.run_context import RunContext, RunOptions


class FakeStep:
    number = 1


class FakeWave:
    def __init__(self, wave_id: int):
        self.wave_id = wave_id
        self.step = FakeStep()
        self.model = None
        self.subjects = [f"s{wave_id}"]
        self.wf = FakeWorkflow()  # the definition it was claimed under: no model row


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

    def generate(pool, wf, step, subjects, should_stop, all_started=None):
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



# ---------------------------------------------------------------- wave size

class ClaimRecorder:
    """A wave store with plenty of ready work at step 1 that records each claim's limit."""

    def __init__(self) -> None:
        self.limits: list[int] = []

    def ready_steps(self, cap: int) -> dict[int, int]:
        return {1: 1000}

    def limit_wait(self, step: Any) -> float:
        return 0.0   # no rate or concurrency limit

    def claim(self, step: Any, limit: int, *, with_rows: bool, model: str | None) -> FakeWave:
        self.limits.append(limit)
        return FakeWave(len(self.limits))


class ClosedBreaker:
    def allows(self, step: Any) -> None:
        return None   # closed: no limit of its own

    def cooling(self, step: Any) -> bool:
        return False


class LimitedStep:
    def __init__(self, number: int):
        self.number = number
        self.actor = f"api{number}"
        self.params: dict[str, Any] = {}


class ModelSteps:
    """Two model steps of one model (the fake models have no file: one load key)."""

    def __init__(self) -> None:
        self.steps = {1: LimitedStep(1), 2: LimitedStep(2)}

    def is_model_step(self, step: Any) -> bool:
        return True

    def model_of(self, step: Any) -> None:
        return None


class HeldStore:
    """Ready work at both steps; step 1's actor is held by its limit already, and
    step 2's claim finds its actor at its limit (the store then holds it)."""

    def __init__(self) -> None:
        self.waits = {1: 0.3, 2: 0.0}
        self.claims: list[int] = []

    def ready_steps(self, cap: int) -> dict[int, int]:
        return {1: 5, 2: 5}

    def limit_wait(self, step: LimitedStep) -> float:
        return self.waits[step.number]

    def claim(self, step: LimitedStep, limit: int, **kw: Any) -> None:
        self.claims.append(step.number)
        self.waits[step.number] = 0.05
        return None


class OpenBreaker:
    def allows(self, step: Any) -> None:
        return None

    def cooling(self, step: Any) -> bool:
        return False


def model_workflow(model: ModelDef, step_params: dict[str, Any] | None = None) -> Workflow:
    step = StepDef(workflow_id=1, number=1, name="extract", kind="actor", actor="a",
                   template="t", params=step_params or {})
    return Workflow(id=1, name="w", description="", subject_table="items", subject_key="id",
                    paused=False, version=1, steps={1: step}, transitions={}, entry_points=[],
                    actors={"a": ActorDef("a", "model", model.name)},
                    models={model.name: model}, templates={"t": "{{ title }}"})


def claimed_limit(model: ModelDef, step_params: dict[str, Any] | None = None,
                  **options: Any) -> int:
    """The limit of the model lane's first claim for a step of this model."""
    store = ClaimRecorder()
    ctx = RunContext(None, model_workflow(model, step_params),  # type: ignore[arg-type]
                     RunOptions(**options), "w1", threading.Event())
    lane = ModelLane(ctx, store, ClosedBreaker())  # type: ignore[arg-type]
    assert lane.claim_next() is not None
    return store.limits[0]


def test_a_wave_claims_twice_the_model_parallel_when_that_is_more_than_the_batch_size():
    assert claimed_limit(ModelDef("m", "m.gguf", parallel=16)) == 32
    assert claimed_limit(ModelDef("m", "m.gguf", parallel=4), model_batch_size=3) == 8


def test_a_wave_keeps_the_model_batch_size_when_it_already_covers_the_slots():
    assert claimed_limit(ModelDef("m", "m.gguf")) == 8                 # CPU default: 1 slot
    assert claimed_limit(ModelDef("m", "m.gguf", parallel=2)) == 8
    assert claimed_limit(ModelDef("m", "m.gguf", parallel=2), model_batch_size=20) == 20
    # GPU layers without a parallel: the GPU default of 8 slots
    assert claimed_limit(ModelDef("m", "m.gguf", n_gpu_layers=-1)) == 2 * DEFAULT_GPU_PARALLEL


def test_a_server_row_counts_the_slots_of_all_its_servers():
    servers = "http://gpu1:8080#parallel=8, http://gpu2:8080#parallel=8"
    assert claimed_limit(ModelDef("m", servers)) == 32
    assert claimed_limit(ModelDef("m", "http://gpu1:8080")) == 2 * DEFAULT_REMOTE_PARALLEL
    assert model_slots(ModelDef("m", "http://gpu1:8080#parallel=x")) == 1  # its load says why


def test_the_step_batch_size_param_overrides_the_model_slots():
    assert claimed_limit(ModelDef("m", "m.gguf", parallel=16), {"batch_size": 4}) == 4
    assert claimed_limit(ModelDef("m", "m.gguf"), {"batch_size": 50}) == 50


class NotPaused:
    def run(self, fn: Any, **kw: Any) -> bool:
        return False


def test_a_step_held_by_its_limit_gives_way_and_the_lane_waits_for_the_limit():
    ctx = RunContext(NotPaused(), ModelSteps(), RunOptions(poll_s=1.0), "w1",  # type: ignore[arg-type]
                     threading.Event())
    store = HeldStore()
    lane = ModelLane(ctx, store, OpenBreaker())  # type: ignore[arg-type]
    assert lane.claim_next() is None
    # Step 1 was not even tried (its actor is held); step 2's claim found its limit.
    assert store.claims == [2]
    assert lane.no_wave_cause == "limited"
    assert lane.limit_wait == 0.05
    assert lane.idle_wait() == 0.05  # not a poll: as soon as a limit lets a step claim


def test_the_loaded_models_latest_step_is_tried_first_then_the_other_models():
    """Latest first: a subject's later step on a model comes a wave or two after its
    earlier one, while the head they share is in the model's prefix cache."""
    a, b = ModelDef("a", "a.gguf"), ModelDef("b", "b.gguf")
    steps = {n: StepDef(workflow_id=1, number=n, name=f"s{n}", kind="actor", actor=actor,
                        template="t", params={})
             for n, actor in ((1, "on_a"), (2, "on_b"), (3, "on_a"), (4, "on_b"))}
    wf = Workflow(id=1, name="w", description="", subject_table="items", subject_key="id",
                  paused=False, version=1, steps=steps, transitions={}, entry_points=[],
                  actors={"on_a": ActorDef("on_a", "model", "a"),
                          "on_b": ActorDef("on_b", "model", "b")},
                  models={"a": a, "b": b}, templates={"t": "{{ title }}"})
    ctx = RunContext(None, wf, RunOptions(), "w1", threading.Event())  # type: ignore[arg-type]
    lane = ModelLane(ctx, ClaimRecorder(), OpenBreaker())  # type: ignore[arg-type]
    lane.current_model = lane.model_key(steps[1])          # model a is loaded
    ready = {1: 50, 2: 10, 3: 8, 4: 5}
    assert [s.number for s in lane.candidate_steps(ready)] == [3, 1, 4, 2]
    # a step with no ready work is not a candidate; the order of the rest holds
    assert [s.number for s in lane.candidate_steps({1: 50, 2: 10, 3: 0, 4: 5})] == [1, 4, 2]
