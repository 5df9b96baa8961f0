"""The model lane: one thread that owns the resident models and keeps them busy.

It prefers waves for the model already loaded, and switches only when that
model has no work left or another model's backlog is `switch_ratio` times
larger. While it generates, a DB thread commits the previous wave and claims
the next one, so generation does not wait on PostgreSQL, and no connection is
held during a generation. Like the cheap lane, it claims and commits through
the wave store and asks the breaker before it claims; a step whose actor is
held by its rate or concurrency limit (limits.py) gives way to the next, and
while only such steps have work the lane waits until the first may claim.

It tells the run's lane clock what it is doing at every moment (generating,
loading or switching a model, waiting for a claim or a commit, held back by a
breaker or an actor's limit, idle, paused): the timeline of docs/ops.md.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from datetime import UTC, datetime
from typing import Any

from .actor_api import utcnow
from .breaker import Breaker
from .db import one
from .definitions import ModelDef, StepDef
from .errors import first_line
from .model_actor import run_model_wave
from .models import ModelLoadError, ModelPool, is_remote, load_key, parallel_of, remote_endpoints
from .queries import Q
from .run_context import RunContext
from .wave_store import Wave, WaveStore

log = logging.getLogger(__name__)

# Backlogs are counted up to this many per step: enough to compare models
# (switch_ratio), bounded so the count stays cheap on a huge queue.
MODEL_BACKLOG_CAP = 100_000
# A wave holds at least this many subjects per sequence the model serves at
# once. The model actor runs a wave to its end before the next one starts, so a
# wave of exactly N subjects for N slots would run them all at once and then
# leave slots empty while the slowest finish; with 2N, a slot freed early takes
# the next subject at once and the slots stay full for most of the wave.
WAVE_SUBJECTS_PER_SLOT = 2


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

    def on_event(self, event: dict[str, Any]) -> None:
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
        pool = ModelPool(ctx.opt.model_memory_mb * 1024 * 1024, on_event=self.on_event)
        db_lane = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-db")
        commits: list[cf.Future[int]] = []
        nxt: cf.Future[Wave | None] | None = None
        clock = self.clock
        try:
            nxt = self._submit_claim(db_lane, commits)
            wave: Wave | None = None
            while not ctx.stop.is_set():
                wave = self._await_claim(nxt, polling=wave is None)
                if wave is None:
                    ctx.model_busy.clear()
                    clock.enter(self.no_wave_cause)
                    ctx.stop.wait(self.idle_wait())
                    nxt = self._submit_claim(db_lane, commits)
                    continue
                ctx.model_busy.set()
                self.current_model = self.model_key(wave.step)
                # Claim the next wave while this one generates.
                nxt = self._submit_claim(db_lane, commits)
                clock.enter("generating", model=wave.model, step=wave.step.number,
                            subjects=len(wave.subjects), new=True)
                t0, started = time.monotonic(), utcnow()
                # On stop the generation returns early; the subjects it has no result
                # for are released by the commit, without counting an attempt.
                results = run_model_wave(pool, wave.wf, wave.step, wave.subjects,
                                         should_stop=ctx.stop.is_set)
                busy_ms = (time.monotonic() - t0) * 1000
                events, self.events = self.events, []
                commits.append(db_lane.submit(self.commit, wave, results, busy_ms, events,
                                              started))
                self._record_files(db_lane, results)
                commits = self._surface_failed_commits(commits)
            clock.enter("waiting_commit")
            for f in commits:
                f.result()
        finally:
            # Stopping, or the lane failed: give back a prefetched wave nobody will run.
            # (A wave whose generation or commit failed is not given back: its lease
            # expires and the reaper returns it, as for a worker that died on it.)
            if nxt is not None:
                self._give_back(db_lane, nxt)
            ctx.model_busy.clear()
            if ctx.summary is not None:
                ctx.summary.model_loads = getattr(pool, "loads", 0)
                ctx.summary.model_switches = getattr(pool, "switches", 0)
            # The lane has stopped; its clock ends with the run (the sampler ends it).
            clock.enter("idle")
            self._closing = True
            pool.close()
            db_lane.shutdown(wait=True)

    def idle_wait(self) -> float:
        """How long to wait before the next claim when the last found nothing: a poll,
        or less when a limit lets a held step claim sooner."""
        wait = min(self.ctx.opt.poll_s, 0.2)
        if self.no_wave_cause == "limited":
            wait = min(wait, max(self.limit_wait, 0.01))
        return wait

    def _submit_claim(self, db_lane: cf.ThreadPoolExecutor,
                      commits: list[cf.Future[int]]) -> cf.Future[Wave | None]:
        """Queues the next claim on the DB thread, behind the commits still queued."""
        self._commits_ahead = [f for f in commits if not f.done()]
        return db_lane.submit(self.claim_next)

    def _await_claim(self, nxt: cf.Future[Wave | None], polling: bool) -> Wave | None:
        """The claimed wave; the time spent waiting for it goes to the clock as waiting
        on the commits queued ahead of the claim, then as waiting for the claim. While
        polling for work (the last claim found none), a claim is no new cause: the
        lane stays idle, paused or held back by a breaker until a claim finds a wave."""
        if not nxt.done():
            ahead = [f for f in self._commits_ahead if not f.done()]
            if ahead:
                self.clock.enter("waiting_commit")
                cf.wait(ahead)
            if not nxt.done() and not polling:
                self.clock.enter("waiting_claim")
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

    def _give_back(self, db_lane: cf.ThreadPoolExecutor, nxt: cf.Future[Wave | None]) -> None:
        """Releases the prefetched wave, if its claim found one; best effort, since the
        lane may be ending because the database failed (then its lease expires)."""
        try:
            wave = nxt.result()
            if wave is not None:
                db_lane.submit(self._release, wave).result()
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

    @staticmethod
    def _surface_failed_commits(commits: list[cf.Future[int]]) -> list[cf.Future[int]]:
        """Raises a finished commit's error now; returns the commits still running."""
        for f in [f for f in commits if f.done()]:
            f.result()
        return [f for f in commits if not f.done()]

    def _record_files(self, db_lane: cf.ThreadPoolExecutor, results: list[Any]) -> None:
        for res in results:
            name, sha = res.audit.get("model"), res.audit.get("model_sha256")
            if name and sha and name not in self.recorded_sha:
                self.recorded_sha.add(name)
                db_lane.submit(self.ctx.db.run, lambda c, n=name, s=sha: c.execute(
                    Q["record_model_file"], {"name": n, "sha256": s, "size_bytes": None}))

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
        if tried and self.ctx.db.run(lambda c: one(c.execute(
                Q["timeline_workflow_paused"], {"workflow_id": self.ctx.wf.id}))["paused"]):
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
        model's first (earliest step first, which keeps subjects flowing to later
        steps), then the other models' by backlog. Steps whose breaker is cooling
        are left out."""
        wf = self.ctx.wf
        per_model: dict[str, int] = {}
        steps_of: dict[str, list[StepDef]] = {}
        for number in sorted(ready):
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


def model_slots(model: ModelDef) -> int:
    """Sequences a model serves at once, known without loading it: a server row's
    slots are the sum of its servers' ``#parallel`` (as the remote backend counts
    them), a local model's its ``parallel`` or the backend's default. A source
    that does not parse counts 1: its load fails and says why."""
    if is_remote(model.source):
        try:
            return sum(e.parallel for e in remote_endpoints(model.source))
        except ModelLoadError:
            return 1
    return parallel_of(model)


def choose_model(current: str | None, backlog: dict[str, int], switch_ratio: float) -> str:
    """Stay on the loaded model unless it has no work, or another model's backlog is
    switch_ratio times larger. Otherwise take the largest backlog."""
    largest = max(backlog, key=lambda m: (backlog[m], m))
    if current is None or current not in backlog:
        return largest
    if largest != current and backlog[largest] > switch_ratio * backlog[current]:
        return largest
    return current
