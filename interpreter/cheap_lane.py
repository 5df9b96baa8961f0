"""The cheap lane (the run's main thread): gates, SQL actors and script actors,
the earliest step with work first. It also decides when an --until-idle run
is done (after a last admission pass); new subjects are otherwise admitted by
the admission thread (admission.py), backlog or not.

Gates, and actors whose kind says so (SQL actors, quick scripts), run inline
(claim, compute and commit in one transaction); other cheap kinds take a leased
wave, like the model lane. The lane asks the registry of actor kinds
(actor_kinds) how a kind runs; it does not switch on a kind's name.

A step whose actor is held by its rate or concurrency limit is passed over
until the limit lets it claim again; when only such steps have work, the lane
sleeps until the first of them may claim (limits.py), not a poll interval.

A gate's statement runs through the wave store's actor_statement: in a
savepoint, bounded by the step's timeout_s, a transient error redoing the wave.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from .actor_api import StepResult, failed_wave, outcome_of, utcnow
from .actor_kinds import kind_of
from .breaker import Breaker
from .cheap_kinds import SCRIPT, SQL
from .definitions import StepDef
from .errors import StatementFailed
from .run_context import RunContext
from .run_lifecycle import CONTROL_INTERVAL_S, RunLifecycle
from .wave_store import WaveStore
from .waves import InlineWave, actor_statement

log = logging.getLogger(__name__)

BUILT_IN_KINDS = (SQL, SCRIPT)  # registered by cheap_kinds

# While idle, how often the lane looks (in memory) whether its admission thread
# admitted something, so that new subjects do not wait for the next poll.
IDLE_SLICE_S = 0.05


class CheapLane:
    def __init__(self, ctx: RunContext, store: WaveStore, breaker: Breaker,
                 lifecycle: RunLifecycle):
        self.ctx = ctx
        self.store = store
        self.breaker = breaker
        self.lifecycle = lifecycle

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Runs waves until stopped, paused (with --until-idle), or, with
        --until-idle, until nothing is left for either lane."""
        ctx, opt = self.ctx, self.ctx.opt
        idle_checks = 0
        while not ctx.stop.is_set():
            if ctx.model_error is not None:
                return
            if self.lifecycle.paused():
                if opt.until_idle:
                    log.warning("workflow %s is paused; stopping", ctx.wf.id)
                    ctx.stop.set()
                    return
                ctx.stop.wait(opt.poll_s)
                continue
            ready = self.store.ready_steps(cap=1)
            picked = self.pick_step(ready)
            if picked is not None:
                idle_checks = 0
                self.drain(*picked)
                continue
            limited = self.limit_wait(ready)
            if limited is not None:
                idle_checks = 0
                ctx.stop.wait(min(max(limited, 0.01), opt.poll_s))
                continue
            pending = self.store.anything_pending()
            if not pending and not ctx.model_busy.is_set():
                if opt.until_idle:
                    # Nothing left: one more admission pass (new rows may have come),
                    # and one more look, since the model lane may just have committed.
                    if opt.limit is None and self.admit_more(None):
                        continue
                    idle_checks += 1
                    if idle_checks < 2:
                        continue
                    return
            if pending:
                ctx.stop.wait(min(opt.poll_s, 0.05))
            else:
                self.idle_wait(opt.poll_s)

    def idle_wait(self, seconds: float) -> None:
        """Waits for the next poll, or less: until this worker's admission thread
        admits new subjects (an in-memory look every IDLE_SLICE_S), or the run stops.
        Subjects admitted by another worker are seen at the next poll."""
        ctx = self.ctx
        seen = ctx.summary.admitted if ctx.summary else 0
        end = time.monotonic() + seconds
        while not ctx.stop.wait(max(0.0, min(IDLE_SLICE_S, end - time.monotonic()))):
            if time.monotonic() >= end or (ctx.summary and ctx.summary.admitted != seen):
                return

    def admit_more(self, limit: int | None) -> int:
        if limit == 0:
            return 0
        n = self.store.admit(limit)
        self.ctx.count_admitted(n)
        return n

    def cheap_steps(self, ready: dict[int, int]) -> list[StepDef]:
        """The cheap steps with ready work, earliest first."""
        wf = self.ctx.wf
        steps = [wf.steps.get(number) for number in sorted(ready)]
        # A subject parked at a removed step waits; models have a lane.
        return [s for s in steps if s is not None and not wf.is_model_step(s)]

    def limit_wait(self, ready: dict[int, int]) -> float | None:
        """When every cheap step with ready work is held by its actor's limit: the
        seconds until the first may claim again (None: some step is not held)."""
        waits = [self.store.limit_wait(s) for s in self.cheap_steps(ready)]
        if not waits or min(waits) <= 0:
            return None
        return min(waits)

    def pick_step(self, ready: dict[int, int]) -> tuple[StepDef, int | None] | None:
        """The earliest cheap step with ready work whose breaker and limits let it run,
        and how many it may claim (None: a full wave; 1: a half-open probe)."""
        for step in self.cheap_steps(ready):
            if self.store.limit_wait(step) > 0:
                continue  # held by its actor's rate or concurrency limit
            allowance = self.breaker.allows(step)
            if allowance == 0:
                continue
            return step, allowance
        return None

    def drain(self, step: StepDef, allowance: int | None) -> None:
        """Runs waves of one step while they come back full: no scheduling query
        between waves of a long backlog."""
        if allowance == 1:  # a half-open probe: one wave, then the probe ends
            try:
                if not self.ctx.stop.is_set():
                    self.run_wave(step, 1)
            finally:
                self.breaker.end_probe(step)
            return
        limit = allowance or self.ctx.opt.batch_size
        started = time.monotonic()
        while not self.ctx.stop.is_set():
            n = self.run_wave(step, limit)
            if n < limit or time.monotonic() - started > CONTROL_INTERVAL_S:
                return
            if not self.breaker.is_closed(step):
                return  # this wave opened the breaker

    # ------------------------------------------------------------ one wave

    def run_wave(self, step: StepDef, limit: int) -> int:
        """Runs one wave of a cheap step; returns the checkpoints written."""
        actor = self.ctx.wf.actor_of(step)
        if step.kind == "gate" or self.is_inline(step):
            return self.store.run_inline(step, limit, self._compute_inline)
        wave = self.store.claim(step, limit, with_rows=True)
        if wave is None:
            return 0
        assert actor is not None
        run = kind_of(actor.kind).run_wave
        assert run is not None
        started, t0 = utcnow(), time.monotonic()
        results = run(actor, step, wave.subjects)
        busy = (time.monotonic() - t0) * 1000
        return self.store.commit(wave, results, busy, started=started)

    def is_inline(self, step: StepDef) -> bool:
        """The step's actor kind computes inside the wave's transaction (actor_kinds):
        a SQL actor always, a script that says it is quick (`params.inline = true`).
        No lease, half the writes; the step's timeout bounds how long the
        transaction stays open, so slow work keeps a leased wave."""
        actor = self.ctx.wf.actor_of(step)
        if actor is None:
            return False
        return kind_of(actor.kind).runs_inline(self.ctx.wf.params_of(step))

    def _compute_inline(self, c: psycopg.Connection[Any], wave: InlineWave) -> list[StepResult]:
        """An inline wave's results, computed inside the transaction that commits them."""
        step = wave.step
        if step.kind == "gate":
            return run_gate(c, wave)
        actor = wave.wf.actor_of(step)
        assert actor is not None
        kind = kind_of(actor.kind)
        if kind.run_inline is not None:
            return kind.run_inline(c, wave, actor.target)
        assert kind.run_wave is not None
        return kind.run_wave(actor, step, self.store.subjects_of(c, wave))


def run_gate(c: psycopg.Connection[Any], wave: InlineWave) -> list[StepResult]:
    """A gate's general road: one statement over the wave, one outcome per subject
    (a subject the gate did not return gets the default outcome)."""
    step, ids, started = wave.step, wave.ids, wave.started
    default = str(step.params.get("default_outcome", "RUN"))
    try:
        with actor_statement(c, wave, "gate SQL"):  # a broken gate must not poison the wave
            rows = c.execute(step.gate_sql or "", wave.params()).fetchall()
    except StatementFailed as exc:
        return failed_wave(ids, str(exc), started, actor_failure=not exc.transient)
    outcomes: dict[str, str] = {}
    for r in rows:
        sid = str(r.get("subject_id"))
        outcomes[sid] = outcome_of(r.get("outcome"), default)
    # Ids the gate returned that are not in the wave are ignored: a gate can only
    # decide for the subjects it was asked about.
    finished = utcnow()
    return [StepResult(i, True, outcomes.get(i, default), started_at=started,
                       finished_at=finished) for i in ids]
