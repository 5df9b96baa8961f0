"""Cross-wave continuity in the model lane, with the real model actor over a fake
backend: with more than one slot the next wave of the same model enters the
backend while the current wave finishes; with one slot, another model, or a
breaker probe, waves run one after another. A stop ends both waves in flight
and gives back the wave claimed ahead."""

from __future__ import annotations

import threading
import time
from typing import Any

from interpreter import model_lane
from interpreter.actor_api import Subject
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow
from interpreter.llm.backend import Generation, GenerationRequest
from interpreter.model_lane import ModelLane
from interpreter.run_context import RunContext, RunOptions
from interpreter.wave_rules import Claimed
from interpreter.waves import Wave

SUBJECTS_PER_WAVE = 4
# The last subject of each wave takes longest: the wave's tail, which the next
# wave's subjects fill when they may.
SLOW_S, FAST_S = 0.20, 0.03
SLOW = f"-{SUBJECTS_PER_WAVE - 1}"


class Backend:
    """A loaded model with `slots` sequences, admitting waiting calls as slots free;
    records when each subject entered a slot and when it ended."""

    def __init__(self, name: str, slots: int, log: list[tuple[str, str, float]]):
        self.name = name
        self.slots = slots
        self.sha256 = None
        self.n_ctx = 512
        self.free = threading.Semaphore(slots)
        self.log = log
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def count_prompt(self, messages: Any) -> None:
        return None

    def generate(self, request: GenerationRequest) -> Generation:
        should_stop = request.should_stop
        assert should_stop is not None
        subject = request.chat()[-1]["content"]
        with self.free:
            with self.lock:
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            self.log.append(("in", subject, time.monotonic()))
            until = time.monotonic() + (SLOW_S if subject.endswith(SLOW) else FAST_S)
            reason = "stop"
            while time.monotonic() < until:
                if should_stop():
                    reason = "aborted"
                    break
                time.sleep(0.005)
            self.log.append(("out", subject, time.monotonic()))
            with self.lock:
                self.running -= 1
        return Generation("ok", reason, 3, 1, 1.0)


class Pool:
    """Loads one Backend per model row; records every acquire."""

    def __init__(self, log: list[tuple[str, str, float]]):
        self.log = log
        self.backends: dict[str, Backend] = {}
        self.acquired: list[str] = []
        self.loads = self.switches = 0

    def __call__(self, *args: Any, **kw: Any) -> Pool:    # stands in for ModelPool(...)
        return self

    def acquire(self, model: ModelDef) -> Backend:
        self.acquired.append(model.name)
        if model.name not in self.backends:
            self.backends[model.name] = Backend(model.name, model.parallel or 1, self.log)
        return self.backends[model.name]

    def close(self) -> None:
        pass


def workflow() -> Workflow:
    models = {"a": ModelDef("a", "a.gguf", parallel=2), "b": ModelDef("b", "b.gguf", parallel=2),
              "one": ModelDef("one", "one.gguf", parallel=1)}
    steps = {n: StepDef(workflow_id=1, number=n, name=f"s{n}", kind="actor", actor=f"act_{m}",
                        template="t", params={"max_tokens": 4})
             for n, m in ((1, "a"), (2, "b"), (3, "one"))}
    return Workflow(id=1, name="w", description="", subject_table="items", subject_key="id",
                    paused=False, version=1, steps=steps, transitions={}, entry_points=[],
                    actors={f"act_{m}": ActorDef(f"act_{m}", "model", m) for m in models},
                    models=models, templates={"t": "{{ id }}"})


class Store:
    """A wave store that hands out the scripted waves in order, one claim at a time,
    and records commits and releases. The run stops once `stop_after` waves are
    committed. Its breaker lets the wave numbered `probe` go as a half-open probe."""

    def __init__(self, ctx: RunContext, steps: list[int], *, stop_after: int | None = None,
                 probe: int | None = None):
        self.ctx = ctx
        self.script = [self.wave(i + 1, ctx.wf.steps[n]) for i, n in enumerate(steps)]
        self.stop_after = len(steps) if stop_after is None else stop_after
        self.probe = probe
        self.committed: dict[int, list[str]] = {}
        self.busy_ms: list[float] = []
        self.released: list[int] = []
        self.probes_ended: list[int] = []

    def wave(self, wave_id: int, step: StepDef) -> Wave:
        ids = [f"w{wave_id}-{i}" for i in range(SUBJECTS_PER_WAVE)]
        model = self.ctx.wf.model_of(step)
        return Wave(step, wave_id, {i: Claimed(i, 0, 0) for i in ids},
                    [Subject(i, {"id": i}, {}) for i in ids], self.ctx.wf,
                    model.name if model else None)

    # the wave store's side
    def ready_steps(self, cap: int) -> dict[int, int]:
        return {self.script[0].step.number: 1} if self.script else {}

    def limit_wait(self, step: StepDef) -> float:
        return 0.0

    def claim(self, step: StepDef, limit: int, **kw: Any) -> Wave | None:
        return self.script.pop(0)

    def commit(self, wave: Wave, results: list[Any], busy_ms: float, *args: Any) -> int:
        self.committed[wave.wave_id] = [r.subject_id for r in results]
        self.busy_ms.append(busy_ms)
        if len(self.committed) >= self.stop_after:
            self.ctx.stop.set()
        return len(results)

    def release(self, wave: Wave) -> None:
        self.released.append(wave.wave_id)

    # the breaker's side
    def allows(self, step: StepDef) -> int | None:
        return 1 if self.script and self.script[0].wave_id == self.probe else None

    def cooling(self, step: StepDef) -> bool:
        return False

    def end_probe(self, step: StepDef) -> None:
        self.probes_ended.append(step.number)


def run_lane(monkeypatch, steps: list[int], *, probe: int | None = None,
             stop_when: Any = None) -> tuple[Store, Pool, list[tuple[str, str, float]], float]:
    log: list[tuple[str, str, float]] = []
    pool = Pool(log)
    monkeypatch.setattr(model_lane, "ModelPool", pool)
    ctx = RunContext(None, workflow(), RunOptions(poll_s=0.05), "w1",  # type: ignore[arg-type]
                     threading.Event())
    store = Store(ctx, steps, stop_after=None if stop_when is None else 99, probe=probe)
    lane = ModelLane(ctx, store, store)  # type: ignore[arg-type]
    if stop_when is not None:
        threading.Thread(target=stop_when, args=(ctx, log), daemon=True).start()
    t0 = time.monotonic()
    lane.main()
    assert ctx.model_error is None
    return store, pool, log, time.monotonic() - t0


def span(log: list[tuple[str, str, float]], wave_id: int) -> tuple[float, float]:
    """When the wave's first subject entered the backend, and when its last one ended."""
    mine = [(kind, t) for kind, s, t in log if s.startswith(f"w{wave_id}-")]
    return min(t for k, t in mine if k == "in"), max(t for k, t in mine if k == "out")


def test_with_two_slots_the_next_wave_enters_while_the_current_one_finishes(monkeypatch):
    store, pool, log, wall = run_lane(monkeypatch, [1, 1, 1])
    assert {w: len(ids) for w, ids in store.committed.items()} == {1: 4, 2: 4, 3: 4}
    for earlier, later in ((1, 2), (2, 3)):
        # A subject of the later wave was generating before the earlier wave's
        # slowest subject ended: its slot did not sit empty in the tail.
        assert span(log, later)[0] < span(log, earlier)[1]
    assert pool.backends["a"].most_running == 2          # never more than the slots
    # Overlapping waves count their common time once: the busy time is the lane's.
    assert sum(store.busy_ms) <= wall * 1000
    assert sum(store.busy_ms) >= 0.8 * (span(log, 3)[1] - span(log, 1)[0]) * 1000
    assert store.released == []


def test_with_one_slot_waves_run_one_after_another(monkeypatch):
    store, pool, log, _ = run_lane(monkeypatch, [3, 3])
    assert len(store.committed[1]) == len(store.committed[2]) == 4
    assert span(log, 2)[0] >= span(log, 1)[1]
    assert pool.backends["one"].most_running == 1


def test_a_wave_of_another_model_waits_for_the_end_of_the_waves_in_flight(monkeypatch):
    store, pool, log, _ = run_lane(monkeypatch, [1, 2, 1])
    assert len(store.committed) == 3
    assert span(log, 2)[0] >= span(log, 1)[1]            # b never loads under a's wave
    assert span(log, 3)[0] >= span(log, 2)[1]
    assert pool.acquired == ["a", "b", "a"]


def test_a_breaker_probe_wave_does_not_overlap(monkeypatch):
    store, _, log, _ = run_lane(monkeypatch, [1, 1, 1], probe=2)
    assert len(store.committed) == 3
    assert span(log, 2)[0] >= span(log, 1)[1]            # the probe waits for wave 1's end
    assert span(log, 3)[0] >= span(log, 2)[1]            # and nothing joins the probe
    assert store.probes_ended == [1]                      # its commit ended the probe


def test_a_stop_ends_both_waves_in_flight_and_gives_back_the_wave_claimed_ahead(monkeypatch):
    stopped: list[float] = []

    def stop_once_two_waves_generate(ctx: RunContext, log: list) -> None:
        while not any(s.startswith("w2-") for _, s, _ in list(log)):
            time.sleep(0.005)
        stopped.append(time.monotonic())
        ctx.stop.set()

    store, _, log, _ = run_lane(monkeypatch, [1, 1, 1, 1],
                                stop_when=stop_once_two_waves_generate)
    # Both waves in flight were committed with what finished (the rest is released
    # by the commit, uncounted); the wave claimed ahead was given back, unrun.
    assert set(store.committed) == {1, 2}
    assert len(store.committed[1]) < 4 and len(store.committed[2]) < 4
    assert store.released == [3]
    assert not any(s.startswith("w3-") for _, s, _ in log)
    assert max(t for _, _, t in log) - stopped[0] < 0.1    # within a "decode step"
