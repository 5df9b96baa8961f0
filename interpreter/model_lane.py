"""The model lane: one thread that schedules the model waves and keeps the resident
models busy.

It prefers waves for the model already loaded, and switches only when that
model has no work left or another model's backlog is `switch_ratio` times
larger. A wave generates on a small generation executor while the lane thread
claims the next one through a DB thread, which also commits each wave as soon
as its generation returns, so generation does not wait on PostgreSQL, and no
connection is held during a generation. Like the cheap lane, it claims and
commits through the wave store and asks the breaker before it claims; a step
whose actor is held by its rate or concurrency limit (limits.py) gives way to
the next, and while only such steps have work the lane waits until the first
may claim.

Cross-wave continuity: up to two waves generate at once. The next wave starts
while the current one still generates when both use the same loaded model,
that model serves more than one sequence (a batched local model, a server
row), neither wave is a breaker probe, and every subject of the current wave
has started: its subjects then queue in the backend behind the running ones
and take the slots as the current wave's sequences end (`BatchEngine` admits in
order), so the slots do not empty at a wave's tail. Otherwise it waits for the
waves in flight to end, as a different model must never load or evict while
another wave generates on the pool. Each wave is committed on its own.

It tells the run's lane clock what it is doing at every moment (generating,
loading or switching a model, waiting for a claim or a commit, held back by a
breaker or an actor's limit, idle, paused): the timeline of docs/ops.md.
While any wave generates it says generating (an interval per wave started, so
the common time of two waves is counted once, as it is in their busy_ms).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from .actor_api import utcnow
from .admin import record_model_file
from .breaker import Breaker
from .definitions import StepDef, workflow_paused
from .errors import first_line
from .llm.pool import ModelPool, load_key, model_slots
from .model_actor import run_model_wave
from .run_context import RunContext
from .wave_store import WaveStore
from .waves import Wave

log = logging.getLogger(__name__)

# Backlogs are counted up to this many per step: enough to compare models
# (switch_ratio), bounded so the count stays cheap on a huge queue.
MODEL_BACKLOG_CAP = 100_000
# A wave holds at least this many subjects per sequence the model serves at
# once. With N, a wave would start all its subjects at once and the next wave
# would join it at once (cross-wave continuity, above): the slots would stay
# full as well, but the lane would claim and commit twice as often. With 2N the
# next wave joins halfway, and its claim has the first half's time to come back.
WAVE_SUBJECTS_PER_SLOT = 2
# Waves generating at once: the one finishing and the next, queued behind it.
# A third would only queue behind the second, holding its subjects' leases.
MAX_WAVES_IN_FLIGHT = 2
# How often a lane that waits for its waves looks at the stop flag again when
# nothing else wakes it (the waits end at once on what they wait for).
WAKE_POLL_S = 0.2


@dataclass(eq=False)
class Flight:
    """A wave generating on the generation executor."""

    wave: Wave
    key: str                      # the load key of its model
    slots: int                    # sequences that model serves at once
    t0: float = field(default_factory=time.monotonic)
    started: datetime = field(default_factory=utcnow)
    # Set by the model actor once every subject of the wave has started.
    all_in: threading.Event = field(default_factory=threading.Event)


class ModelLane:
    def __init__(self, ctx: RunContext, store: WaveStore, breaker: Breaker):
        self.ctx = ctx
        self.store = store
        self.breaker = breaker
        self.current_model: str | None = None
        self.events: list[dict[str, Any]] = []
        self.recorded_sha: set[str] = set()
        # Waves sent as a half-open probe (wave id -> step), whose probe ends with them.
        self._probe_waves: dict[int, StepDef] = {}
        self.clock = ctx.lane_clock
        # Why the last claim found nothing: idle, breaker, limited or paused (set by
        # claim_next); when limited, how long until a held step may claim again.
        self.no_wave_cause = "idle"
        self.limit_wait = 0.0
        # The commits queued on the DB thread ahead of the pending claim.
        self._commits_ahead: list[cf.Future[int]] = []
        self._closing = False
        # Shared with the generation threads, under _lock: the waves in flight, the
        # futures of their generations and of the commits not yet checked, and how
        # far the lane's generating time has been accounted to committed waves.
        self._lock = threading.Lock()
        self._flights: list[Flight] = []
        self._generations: list[cf.Future[None]] = []
        self._commits: list[cf.Future[int]] = []
        self._busy_until = 0.0
        # Set when a generation ends or a wave has started all its subjects: what a
        # wave waiting for its turn to start waits for (_await_start).
        self._wake = threading.Event()
        self._next_claim: cf.Future[Wave | None] | None = None
        self._held: Wave | None = None        # claimed, waiting for its turn to start
        self._polling = True                  # the last claim found nothing to do

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:   # from a generation thread (the pool loads there)
            self.events.append({"event": event.get("event"), "model": event.get("model"),
                                "from_model": event.get("from_model"),
                                "duration_ms": event.get("duration_ms"),
                                "detail": event.get("detail"), "at": datetime.now(UTC)})
        self._clock_model_event(event)

    def _clock_model_event(self, event: dict[str, Any]) -> None:
        """A load, switch or eviction is only reported once over, with its duration:
        the clock cuts it out of the interval it happened in. A load that turns out
        to be a switch (the switch is reported right after it) is relabelled."""
        kind, ms = event.get("event"), float(event.get("duration_ms") or 0)
        if self._closing:
            return  # the pool closing at the end of the run is no switch
        if kind in ("load", "load_failed"):
            self.clock.took("loading", ms / 1000, model=event.get("model"))
        elif kind == "evict":
            self.clock.took("switching", ms / 1000, model=event.get("model"))
        elif kind == "switch":
            self.clock.relabel_last("loading", "switching")

    def main(self) -> None:
        """The lane thread's body: a failure stops the run and is raised by the Runner."""
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by Runner.run()
            log.error("model lane failed: %s", first_line(exc))
            self.ctx.model_error = exc
            self.ctx.stop.set()

    def run(self) -> None:
        ctx = self.ctx
        self._pool = ModelPool(ctx.opt.model_memory_mb * 1024 * 1024, on_event=self.on_event)
        self._db_worker = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-db")
        self._generators = cf.ThreadPoolExecutor(max_workers=MAX_WAVES_IN_FLIGHT,
                                               thread_name_prefix="model-wave")
        try:
            self._next_claim = self._submit_claim()
            self._schedule()
            self._drain()
        except BaseException:
            # The lane failed: the waves in flight end at their next decode step, and
            # their commits give back the subjects they have no result for.
            ctx.stop.set()
            raise
        finally:
            self._close_down()

    def _schedule(self) -> None:
        """Until the run stops: take the claimed wave, wait for its turn (may_start),
        start it, and claim the next one while it generates."""
        while not self.ctx.stop.is_set():
            assert self._next_claim is not None
            wave = self._await_claim(self._next_claim)
            self._next_claim = None
            if wave is None:
                self._no_wave()
                self._next_claim = self._submit_claim()
                continue
            self._held = wave
            if not self._await_start(wave):
                return          # stopping: _close_down gives the held wave back
            self._held = None
            self._start(wave)
            self._next_claim = self._submit_claim()

    def _no_wave(self) -> None:
        """The last claim found nothing. While waves generate, the lane claims again
        when one ends (its commit may make work ready) or after a poll; otherwise it
        is idle (or paused, held back...) for a poll."""
        generating = self._pending_generations()
        if generating:
            cf.wait(generating, timeout=self.idle_wait(), return_when=cf.FIRST_COMPLETED)
            return
        self._polling = True
        self.ctx.model_busy.clear()
        self.clock.enter(self.no_wave_cause)
        self.ctx.stop.wait(self.idle_wait())

    def _await_start(self, wave: Wave) -> bool:
        """Waits until the wave may start (may_start); False when the run stops first."""
        while True:
            self._wake.clear()
            self._surface_failures()
            if self.ctx.stop.is_set():
                return False
            with self._lock:
                flights = list(self._flights)
            if self.may_start(wave, flights):
                return True
            self._wake.wait(WAKE_POLL_S)

    def may_start(self, wave: Wave, flights: list[Flight]) -> bool:
        """A wave starts at once when none generates. Beside waves in flight only when
        its subjects would queue in their loaded backend behind theirs: the same load
        key, a backend that serves more than one sequence (the model actor reports
        all_in only for such a wave), every subject of theirs started (so this wave
        takes no thread or slot they wait for), no breaker probe on either side (a
        probe's verdict is its own subject's), and room for one more wave. A wave of
        another model waits for their end: it must not load or evict under them."""
        if not flights:
            return True
        if len(flights) >= MAX_WAVES_IN_FLIGHT or wave.wave_id in self._probe_waves:
            return False
        key = wave_key(wave)
        return all(f.key == key and f.slots > 1 and f.all_in.is_set()
                   and f.wave.wave_id not in self._probe_waves for f in flights)

    def _start(self, wave: Wave) -> None:
        """Starts the wave's generation on the generation executor."""
        model = wave.wf.model_of(wave.step)
        flight = Flight(wave, wave_key(wave), model_slots(model) if model else 1)
        self.ctx.model_busy.set()
        self.current_model = self.model_key(wave.step)
        self._polling = False
        with self._lock:
            self._flights.append(flight)
        # Entered before the generation starts, so that a model load it begins with
        # is cut out of this interval (on_event). With two waves in flight the
        # interval is the newest wave's: the lane's time is counted once.
        self.clock.enter("generating", model=wave.model, step=wave.step.number,
                         subjects=len(wave.subjects), new=True)
        future = self._generators.submit(self._generate, flight)
        with self._lock:
            self._generations.append(future)
        future.add_done_callback(self._wakeup)

    def _generate(self, flight: Flight) -> None:
        """One wave's generation, on a generation thread; its commit is queued on the
        DB thread as soon as it returns, whatever the other wave in flight does."""
        wave = flight.wave
        try:
            # On stop the generation returns early; the subjects it has no result
            # for are released by the commit, without counting an attempt.
            results = run_model_wave(self._pool, wave.wf, wave.step, wave.subjects,
                                     should_stop=self.ctx.stop.is_set,
                                     all_started=lambda: self._all_in(flight))
            with self._lock:
                busy_ms = self._account_busy(flight)
                events, self.events = self.events, []
                commit = self._db_worker.submit(self.commit, wave, results, busy_ms, events,
                                              flight.started)
                self._commits.append(commit)
                self._record_files(results)
        finally:
            with self._lock:
                self._flights.remove(flight)

    def _all_in(self, flight: Flight) -> None:
        flight.all_in.set()
        self._wake.set()

    def _wakeup(self, _done: cf.Future[Any]) -> None:
        self._wake.set()

    def _in_flight(self) -> bool:
        with self._lock:
            return bool(self._flights)

    def _pending_generations(self) -> list[cf.Future[None]]:
        with self._lock:
            return [f for f in self._generations if not f.done()]

    def _account_busy(self, flight: Flight) -> float:
        """The generating time this wave's commit accounts for (ms, under _lock): from
        the start of the earliest wave in flight, or from where the time already
        accounted ends, until now. Overlapping waves count their common time once,
        so Σ busy_ms over a run is the time the lane spent generating and the duty
        cycle (docs/ops.md) stays a share of the run's wall time."""
        now = time.monotonic()
        start = max(self._busy_until, min(f.t0 for f in self._flights))
        self._busy_until = max(self._busy_until, now)
        return max(0.0, now - start) * 1000

    def _drain(self) -> None:
        """The run is stopping: the waves in flight end within a decode step; wait for
        them, then for every commit, raising the first failure."""
        with self._lock:
            generations = list(self._generations)
        cf.wait(generations)
        self._surface_failures()
        self.clock.enter("waiting_commit")
        with self._lock:
            commits = list(self._commits)
        for f in commits:
            f.result()

    def _close_down(self) -> None:
        """Stopping, or the lane failed: lets the waves in flight end (the stop flag ends
        them within a decode step), gives back the claimed waves nobody will run, and
        closes the models. (A wave whose generation or commit failed is not given back:
        its lease expires and the reaper returns it, as for a worker that died on it.)"""
        ctx = self.ctx
        self._generators.shutdown(wait=True)
        for claimed in (self._next_claim, self._held):
            if claimed is not None:
                self._give_back(claimed)
        ctx.model_busy.clear()
        if ctx.summary is not None:
            ctx.summary.model_loads = getattr(self._pool, "loads", 0)
            ctx.summary.model_switches = getattr(self._pool, "switches", 0)
        # The lane has stopped; its clock ends with the run (the utilisation recorder ends it).
        self.clock.enter("idle")
        self._closing = True
        self._pool.close()
        self._db_worker.shutdown(wait=True)

    def idle_wait(self) -> float:
        """How long to wait before the next claim when the last found nothing: a poll,
        or less when a limit lets a held step claim sooner."""
        wait = min(self.ctx.opt.poll_s, 0.2)
        if self.no_wave_cause == "limited":
            wait = min(wait, max(self.limit_wait, 0.01))
        return wait

    def _submit_claim(self) -> cf.Future[Wave | None]:
        """Queues the next claim on the DB thread, behind the commits still queued."""
        with self._lock:
            self._commits_ahead = [f for f in self._commits if not f.done()]
        return self._db_worker.submit(self.claim_next)

    def _await_claim(self, nxt: cf.Future[Wave | None]) -> Wave | None:
        """The claimed wave. While waves generate the clock stays on generating;
        otherwise the time spent waiting goes to the clock as waiting on the commits
        queued ahead of the claim, then as waiting for the claim. While polling for
        work (the last claim found none), a claim is no new cause: the lane stays
        idle, paused or held back by a breaker until a claim finds a wave."""
        while not nxt.done():
            self._surface_failures()
            generating = self._pending_generations()
            ahead = [f for f in self._commits_ahead if not f.done()]
            if not self._in_flight():
                if ahead:
                    self.clock.enter("waiting_commit")
                elif not self._polling:
                    self.clock.enter("waiting_claim")
            # Woken by the claim, or by a generation or commit that ends (the clock's
            # cause changes then).
            waits: list[cf.Future[Any]] = [nxt, *generating, *ahead]
            cf.wait(waits, timeout=WAKE_POLL_S, return_when=cf.FIRST_COMPLETED)
        return nxt.result()

    def commit(self, wave: Wave, results: list[Any], busy_ms: float,
               events: list[dict[str, Any]], started: datetime | None = None) -> int:
        """Commits a generated wave (on the DB thread), then ends its probe if it was one.
        `started` is when its generation began: the wave's started_at, which
        interp.model_lane_gaps compares with the previous wave's end."""
        try:
            return self.store.commit(wave, results, busy_ms, events, started)
        finally:
            self._end_probe(wave)

    def _give_back(self, claimed: cf.Future[Wave | None] | Wave) -> None:
        """Releases a claimed wave that will not run (a claim's future: if it found
        one); best effort, since the lane may be ending because the database failed
        (then its lease expires)."""
        try:
            wave = claimed.result() if isinstance(claimed, cf.Future) else claimed
            if wave is not None:
                self._db_worker.submit(self._release, wave).result()
        except Exception as exc:  # noqa: BLE001 - the lane's own error is what matters
            log.warning("could not give back the prefetched model wave: %s", first_line(exc))

    def _release(self, wave: Wave) -> None:
        try:
            self.store.release(wave)
        finally:
            self._end_probe(wave)

    def _end_probe(self, wave: Wave) -> None:
        if self._probe_waves.pop(wave.wave_id, None) is not None:
            self.breaker.end_probe(wave.step)

    def _surface_failures(self) -> None:
        """Raises a finished generation's or commit's error now; forgets those checked."""
        with self._lock:
            running: list[cf.Future[Any]] = [*self._generations, *self._commits]
            done = [f for f in running if f.done()]
            self._generations = [f for f in self._generations if f not in done]
            self._commits = [f for f in self._commits if f not in done]
        for f in done:
            f.result()

    def _record_files(self, results: list[Any]) -> None:
        for res in results:
            name, sha = res.audit.get("model"), res.audit.get("model_sha256")
            if name and sha and name not in self.recorded_sha:
                self.recorded_sha.add(name)
                self._db_worker.submit(self.ctx.db.run, partial(
                    record_model_file, name=name, sha256=sha, size_bytes=None))

    # ---------------------------------------------------------------- choice

    def claim_next(self) -> Wave | None:
        """Claims the next model wave (None: none to run now, and `no_wave_cause`
        says why). The preferred step first; a step its breaker holds back (open,
        or another worker's probe in flight) gives way to the next, so the lane
        never idles behind it."""
        ctx = self.ctx
        self.no_wave_cause = "idle"
        if ctx.stop.is_set():
            return None
        ready = self.store.ready_steps(cap=MODEL_BACKLOG_CAP)
        held = self._breaker_holds_work(ready)
        tried = False
        limit_waits: list[float] = []
        for step in self.candidate_steps(ready):
            if (wait := self.store.limit_wait(step)) > 0:
                limit_waits.append(wait)
                continue
            allowance = self.breaker.allows(step)
            if allowance == 0:
                held = True
                continue
            tried = True
            wave = self._claim_from(step, allowance)
            if wave is not None:
                return wave
            if (wait := self.store.limit_wait(step)) > 0:  # the claim found its limit
                limit_waits.append(wait)
        self.no_wave_cause = self._why_no_wave(tried, held)
        if limit_waits and self.no_wave_cause == "idle":
            self.no_wave_cause, self.limit_wait = "limited", min(limit_waits)
        return None

    def _breaker_holds_work(self, ready: dict[int, int]) -> bool:
        """Whether a model step with ready work is held back by its cooling breaker."""
        wf = self.ctx.wf
        return any(ready[n] and (step := wf.steps.get(n)) is not None
                   and wf.is_model_step(step) and self.breaker.cooling(step) for n in ready)

    def _why_no_wave(self, tried: bool, held: bool) -> str:
        """Ready work that no claim got means a pause (the claim checks it); otherwise
        the lane waits on a breaker, or has nothing to do."""
        if tried and self.ctx.db.run(lambda c: workflow_paused(c, self.ctx.wf.id)):
            return "paused"
        return "breaker" if held else "idle"

    def wave_size(self, step: StepDef) -> int:
        """Subjects to claim for one wave of a model step: the step's own
        `batch_size` param when it has one, else `--model-batch-size` (within
        `--batch-size`) but at least WAVE_SUBJECTS_PER_SLOT x the sequences the
        step's model serves at once, so that a model with more slots than the
        default wave size can fill them."""
        own = step.params.get("batch_size")
        if own is not None:
            return int(own)
        size = min(self.ctx.opt.model_batch_size, self.ctx.opt.batch_size)
        model = self.ctx.wf.model_of(step)
        if model is None:
            return size
        return max(size, WAVE_SUBJECTS_PER_SLOT * model_slots(model))

    def _claim_from(self, step: StepDef, allowance: int | None) -> Wave | None:
        size = self.wave_size(step)
        model = self.ctx.wf.model_of(step)
        wave = self.store.claim(step, allowance or size, with_rows=True,
                                model=model.name if model else None)
        if allowance == 1:  # a probe: held until the wave is committed or released
            if wave is None:
                self.breaker.end_probe(step)
            else:
                self._probe_waves[wave.wave_id] = step
        return wave

    def pick_step(self, ready: dict[int, int]) -> StepDef | None:
        """The model step to claim from first (see candidate_steps)."""
        steps = self.candidate_steps(ready)
        return steps[0] if steps else None

    def candidate_steps(self, ready: dict[int, int]) -> list[StepDef]:
        """The model steps with ready work, in the order to try them: the chosen
        model's first, then the other models' by backlog; each model's latest
        step first. Steps whose breaker is cooling are left out.

        Latest first because a subject's later step on a model then follows its
        earlier one on that model a wave or two later, while the prompt head they
        share is still in the model's prefix cache (llm.prefix_cache). Earliest
        first ran the first step of every admitted subject before any second
        one: with a night's backlog, a subject's second step came thousands of
        prompts after its first, long after the cache had let its head go
        (docs/benchmarks.md, "Which step first"). A later step's ready subjects
        come only from earlier steps, so the earlier ones are not starved."""
        wf = self.ctx.wf
        per_model: dict[str, int] = {}
        steps_of: dict[str, list[StepDef]] = {}
        for number in sorted(ready, reverse=True):
            step = wf.steps.get(number)
            if step is None or not wf.is_model_step(step) or not ready[number]:
                continue
            if self.breaker.cooling(step):
                continue
            key = self.model_key(step)
            per_model[key] = per_model.get(key, 0) + ready[number]
            steps_of.setdefault(key, []).append(step)
        if not per_model:
            return []
        choice = choose_model(self.current_model_key(), per_model, self.ctx.opt.switch_ratio)
        others = sorted((m for m in per_model if m != choice),
                        key=lambda m: (-per_model[m], m))
        return [step for m in [choice, *others] for step in steps_of[m]]

    def model_key(self, step: StepDef) -> str:
        """Roles that name the same file with the same settings share one loaded model,
        so the preference is by what would be loaded, not by role name."""
        m = self.ctx.wf.model_of(step)
        return load_key(m) if m is not None else "?"

    def current_model_key(self) -> str | None:
        return self.current_model


def wave_key(wave: Wave) -> str:
    """The load key of the model a wave runs on, under the definition it was claimed
    with (a model row edited since is another load)."""
    model = wave.wf.model_of(wave.step)
    return load_key(model) if model is not None else "?"


def choose_model(current: str | None, backlog: dict[str, int], switch_ratio: float) -> str:
    """Stay on the loaded model unless it has no work, or another model's backlog is
    switch_ratio times larger. Otherwise take the largest backlog."""
    largest = max(backlog, key=lambda m: (backlog[m], m))
    if current is None or current not in backlog:
        return largest
    if largest != current and backlog[largest] > switch_ratio * backlog[current]:
        return largest
    return current
