"""Cross-wave continuity in the model lane, with the real model actor over a fake
backend: with more than one slot the next wave of the same model enters the
backend while the current wave finishes; with one slot, another model, or a
breaker probe, waves run one after another. A stop ends both waves in flight
and gives back the wave claimed ahead."""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from interpreter import model_lane
from interpreter.actor_api import Subject
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow
from interpreter.llm.backend import Generation, GenerationRequest
from interpreter.model_lane import ModelLane
from interpreter.run_context import RunContext, RunOptions
from interpreter.wave_rules import Claimed
from interpreter.waves import Wave

SUBJECTS_PER_WAVE = 4
# The last subject of each wave is its tail, which the next wave's subjects fill
# when they may. The tail is held by events, not by a duration, so that what the
# tests see does not depend on how fast a loaded machine runs the threads (see
# Stage.tail_may_end). The other subjects generate for FAST_S; no assertion
# depends on that figure.
FAST_S = 0.03
TAIL = f"-{SUBJECTS_PER_WAVE - 1}"
# A tail whose event never comes ends after this long, as it would have without
# the stop or the overlap it waited for: the assertions then fail, nothing hangs.
HANG_GUARD_S = 10.0


class Entry(NamedTuple):
    kind: str              # in | out | stop (the run's stop flag set)
    subject: str           # "" for stop
    at: float              # time.monotonic()
    reason: str | None     # the generation's finish_reason, on "out"


class Decision(NamedTuple):
    ticket: int            # in the order the lane began to ask
    wave: int
    beside: tuple[int, ...]  # the waves in flight
    settled: bool          # every wave in flight had started all its subjects (or has
                           # one slot, which runs them one by one): the answer is final
    starts: bool


def wave_of(subject: str) -> int:
    return int(subject[1:].split("-")[0])


class Stage:
    """What the backends and the lane did, in order: the backend's entries and
    exits (the log, in the order they happened) and the lane's may_start answers.

    A wave's tail stays in the backend until the lane has shown what it does with
    the next wave: a subject of a later wave entered the backend beside it (the
    overlap), or the lane, asked after the tail entered and with every subject of
    the wave started (the tail may get its thread before the subject ahead of it
    does), turned the next wave away while only this wave generated.
    The last scripted wave has no next one: its tail ends at once. With
    `tails_wait_for_stop` a tail ends only on the stop."""

    def __init__(self, waves: int, *, tails_wait_for_stop: bool = False):
        self.waves = waves
        self.tails_wait_for_stop = tails_wait_for_stop
        self.lock = threading.Lock()
        self.log: list[Entry] = []
        self.decisions: list[Decision] = []
        self.tickets = 0

    def record(self, kind: str, subject: str, reason: str | None = None) -> None:
        with self.lock:
            self.log.append(Entry(kind, subject, time.monotonic(), reason))

    def in_backend(self) -> set[str]:
        """The subjects generating now (under self.lock)."""
        inside: set[str] = set()
        for e in self.log:
            if e.kind == "in":
                inside.add(e.subject)
            elif e.kind == "out":
                inside.discard(e.subject)
        return inside

    def watch(self, lane: ModelLane) -> None:
        """Records every answer of the lane's may_start."""
        asks = lane.may_start

        def may_start(wave: Wave, flights: list[Any]) -> bool:
            # Read before the lane asks: all_in is never cleared, so what is set
            # here is set for the answer too.
            settled = all(f.all_in.is_set() or f.slots == 1 for f in flights)
            with self.lock:
                ticket, self.tickets = self.tickets, self.tickets + 1
            starts = asks(wave, flights)
            with self.lock:
                self.decisions.append(Decision(ticket, wave.wave_id,
                                               tuple(f.wave.wave_id for f in flights),
                                               settled, starts))
            return starts

        lane.may_start = may_start  # type: ignore[method-assign]

    def tail_may_end(self, wave: int, since: int) -> bool:
        if self.tails_wait_for_stop:
            return False
        if wave >= self.waves:
            return True
        with self.lock:
            overlapped = any(e.kind == "in" and wave_of(e.subject) > wave for e in self.log)
            turned_away = any(d.ticket >= since and d.settled and d.wave == wave + 1
                              and d.beside == (wave,) and not d.starts for d in self.decisions)
        return overlapped or turned_away


class Backend:
    """A loaded model with `slots` sequences, admitting waiting calls as slots free;
    records on the stage when each subject entered a slot and when it ended."""

    def __init__(self, name: str, slots: int, stage: Stage):
        self.name = name
        self.slots = slots
        self.sha256 = None
        self.n_ctx = 512
        self.free = threading.Semaphore(slots)
        self.stage = stage
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
            with self.stage.lock:
                since = self.stage.tickets    # the lane's answers from now on
            self.stage.record("in", subject)
            if subject.endswith(TAIL):
                def done() -> bool:
                    return self.stage.tail_may_end(wave_of(subject), since)
                until = time.monotonic() + HANG_GUARD_S
            else:
                def done() -> bool:
                    return False
                until = time.monotonic() + FAST_S
            # Like a real backend, it reads should_stop() before each "decode step":
            # a generation running at the stop, or entering after it, is aborted.
            reason = "stop"
            while True:
                if should_stop():
                    reason = "aborted"
                    break
                if done() or time.monotonic() >= until:
                    break
                time.sleep(0.005)
            self.stage.record("out", subject, reason)
            with self.lock:
                self.running -= 1
        return Generation("ok", reason, 3, 1, 1.0)


class Pool:
    """Loads one Backend per model row; records every acquire."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.backends: dict[str, Backend] = {}
        self.acquired: list[str] = []
        self.loads = self.switches = 0

    def __call__(self, *args: Any, **kw: Any) -> Pool:    # stands in for ModelPool(...)
        return self

    def acquire(self, model: ModelDef) -> Backend:
        self.acquired.append(model.name)
        if model.name not in self.backends:
            self.backends[model.name] = Backend(model.name, model.parallel or 1, self.stage)
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
        self.claimed: list[int] = []
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
        wave = self.script.pop(0)
        self.claimed.append(wave.wave_id)
        return wave

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
             stop_when: Any = None) -> tuple[Store, Pool, Stage, float]:
    """Runs the lane over the scripted waves until the last is committed, or with
    `stop_when(ctx, stage, store)` on a thread of its own, until that stops the run
    (the tails then wait for the stop)."""
    stage = Stage(len(steps), tails_wait_for_stop=stop_when is not None)
    pool = Pool(stage)
    monkeypatch.setattr(model_lane, "ModelPool", pool)
    ctx = RunContext(None, workflow(), RunOptions(poll_s=0.05), "w1",  # type: ignore[arg-type]
                     threading.Event())
    store = Store(ctx, steps, stop_after=None if stop_when is None else 99, probe=probe)
    lane = ModelLane(ctx, store, store)  # type: ignore[arg-type]
    stage.watch(lane)
    if stop_when is not None:
        threading.Thread(target=stop_when, args=(ctx, stage, store), daemon=True).start()
    t0 = time.monotonic()
    lane.main()
    assert ctx.model_error is None
    return store, pool, stage, time.monotonic() - t0


def span(stage: Stage, wave_id: int) -> tuple[int, int]:
    """Where in the log the wave's first subject entered the backend, and where its
    last one ended: positions, which order the events exactly, whatever the clock."""
    mine = [(i, e.kind) for i, e in enumerate(stage.log)
            if e.kind != "stop" and wave_of(e.subject) == wave_id]
    return min(i for i, k in mine if k == "in"), max(i for i, k in mine if k == "out")


def span_s(stage: Stage, wave_id: int) -> tuple[float, float]:
    """The same two events' times (time.monotonic)."""
    first, last = span(stage, wave_id)
    return stage.log[first].at, stage.log[last].at


def turned_away(stage: Stage, wave: int, beside: int) -> bool:
    """Whether the lane refused to start `wave` while only `beside` generated, all
    its subjects started (its final answer, not a "not yet")."""
    return any(d.wave == wave and d.beside == (beside,) and d.settled and not d.starts
               for d in stage.decisions)


def started_beside_another(stage: Stage) -> list[Decision]:
    return [d for d in stage.decisions if d.starts and d.beside]


def test_with_two_slots_the_next_wave_enters_while_the_current_one_finishes(monkeypatch):
    store, pool, stage, wall = run_lane(monkeypatch, [1, 1, 1])
    assert {w: len(ids) for w, ids in store.committed.items()} == {1: 4, 2: 4, 3: 4}
    for earlier, later in ((1, 2), (2, 3)):
        # A subject of the later wave was generating before the earlier wave's
        # tail ended: its slot did not sit empty in the tail. (The tail waits for
        # that, or for the lane to turn the later wave away: then this fails.)
        assert span(stage, later)[0] < span(stage, earlier)[1]
    assert pool.backends["a"].most_running == 2          # never more than the slots
    # Overlapping waves count their common time once: the busy time is the lane's.
    assert sum(store.busy_ms) <= wall * 1000
    assert sum(store.busy_ms) >= 0.8 * (span_s(stage, 3)[1] - span_s(stage, 1)[0]) * 1000
    assert store.released == []


def test_with_one_slot_waves_run_one_after_another(monkeypatch):
    store, pool, stage, _ = run_lane(monkeypatch, [3, 3])
    assert len(store.committed[1]) == len(store.committed[2]) == 4
    # Wave 1's tail stayed until the lane, with wave 2 claimed, turned it away.
    assert turned_away(stage, 2, beside=1)
    assert started_beside_another(stage) == []
    assert span(stage, 2)[0] > span(stage, 1)[1]
    assert pool.backends["one"].most_running == 1


def test_a_wave_of_another_model_waits_for_the_end_of_the_waves_in_flight(monkeypatch):
    store, pool, stage, _ = run_lane(monkeypatch, [1, 2, 1])
    assert len(store.committed) == 3
    assert turned_away(stage, 2, beside=1) and turned_away(stage, 3, beside=2)
    assert started_beside_another(stage) == []
    assert span(stage, 2)[0] > span(stage, 1)[1]          # b never loads under a's wave
    assert span(stage, 3)[0] > span(stage, 2)[1]
    assert pool.acquired == ["a", "b", "a"]


def test_a_breaker_probe_wave_does_not_overlap(monkeypatch):
    store, _, stage, _ = run_lane(monkeypatch, [1, 1, 1], probe=2)
    assert len(store.committed) == 3
    # The probe waits for wave 1's end, and nothing joins the probe.
    assert turned_away(stage, 2, beside=1) and turned_away(stage, 3, beside=2)
    assert started_beside_another(stage) == []
    assert span(stage, 2)[0] > span(stage, 1)[1]
    assert span(stage, 3)[0] > span(stage, 2)[1]
    assert store.probes_ended == [1]                      # its commit ended the probe


def test_a_stop_ends_both_waves_in_flight_and_gives_back_the_wave_claimed_ahead(monkeypatch):
    at_stop: list[set[str]] = []

    def stop_once_both_tails_generate_and_the_third_wave_is_claimed(
            ctx: RunContext, stage: Stage, store: Store) -> None:
        # Both slots held by the two waves' tails, which wait for nothing but the
        # stop: the state the lane must end, reached whatever the threads' pace.
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            with stage.lock:
                if 3 in store.claimed and stage.in_backend() == {"w1-3", "w2-3"}:
                    at_stop.append(stage.in_backend())
                    stage.log.append(Entry("stop", "", time.monotonic(), None))
                    ctx.stop.set()
                    return
            time.sleep(0.005)
        ctx.stop.set()       # the hang guard: at_stop stays empty, and the test fails

    store, _, stage, _ = run_lane(monkeypatch, [1, 1, 1, 1],
                                  stop_when=stop_once_both_tails_generate_and_the_third_wave_is_claimed)
    assert at_stop == [{"w1-3", "w2-3"}]                  # a subject of each wave generating
    # Every generation running at the stop, or entering after it, was ended by the
    # stop at its next decode step: none ran to its end or to the hang guard.
    stop = next(i for i, e in enumerate(stage.log) if e.kind == "stop")
    outs = {e.subject: e.reason for e in stage.log[stop:] if e.kind == "out"}
    assert {"w1-3", "w2-3"} <= set(outs)
    assert set(outs.values()) == {"aborted"}
    # Both waves in flight were committed with what finished (the rest is released
    # by the commit, uncounted); the wave claimed ahead was given back, unrun.
    assert set(store.committed) == {1, 2}
    assert not set(outs) & {*store.committed[1], *store.committed[2]}
    assert len(store.committed[1]) < 4 and len(store.committed[2]) < 4
    assert store.claimed == [1, 2, 3]
    assert store.released == [3]
    assert not any(e.subject.startswith("w3-") for e in stage.log)
