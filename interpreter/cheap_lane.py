"""The cheap lane (the run's main thread): gates, SQL actors and script actors,
the earliest step with work first. It also admits new subjects while idle and
decides when an --until-idle run is done.

Gates, SQL actors and quick scripts run inline (claim, compute and commit in
one transaction); other scripts take a leased wave, like the model lane.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .actor_api import StepResult, utcnow
from .breaker import Breaker
from .definitions import StepDef
from .errors import first_line
from .run_context import RunContext
from .run_control import CONTROL_INTERVAL_S, RunControl
from .scripts import ScriptRunner
from .wave_store import InlineWave, WaveStore

log = logging.getLogger(__name__)


class CheapLane:
    def __init__(self, ctx: RunContext, store: WaveStore, breaker: Breaker,
                 control: RunControl, scripts: ScriptRunner):
        self.ctx = ctx
        self.store = store
        self.breaker = breaker
        self.control = control
        self.scripts = scripts

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Runs waves until stopped, paused (with --until-idle), or, with
        --until-idle, until nothing is left for either lane."""
        ctx, opt = self.ctx, self.ctx.opt
        idle_checks = 0
        last_admit = time.monotonic()
        while not ctx.stop.is_set():
            if ctx.model_error is not None:
                return
            if self.control.paused():
                if opt.until_idle:
                    log.warning("workflow %s is paused; stopping", ctx.wf.id)
                    ctx.stop.set()
                    return
                ctx.stop.wait(opt.poll_s)
                continue
            picked = self.pick_step(self.store.ready_steps(cap=1))
            if picked is not None:
                idle_checks = 0
                self.drain(*picked)
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
                if time.monotonic() - last_admit > opt.poll_s:
                    last_admit = time.monotonic()
                    if self.admit_more(ctx.admission_left()):
                        continue
            ctx.stop.wait(min(opt.poll_s, 0.05) if pending else opt.poll_s)

    def admit_more(self, limit: int | None) -> int:
        if limit == 0:
            return 0
        n = self.store.admit(limit)
        self.ctx.count_admitted(n)
        return n

    def pick_step(self, ready: dict[int, int]) -> tuple[StepDef, int | None] | None:
        """The earliest cheap step with ready work whose breaker lets it run, and how
        many it may claim (None: a full wave; 1: a half-open probe)."""
        wf = self.ctx.wf
        for number in sorted(ready):
            step = wf.steps.get(number)
            if step is None or wf.is_model_step(step):
                continue  # a subject parked at a removed step waits; models have a lane
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
        if step.kind == "gate" or (actor and actor.kind == "sql") or self.is_inline_script(step):
            return self.store.run_inline(step, limit, self._compute_inline)
        wave = self.store.claim(step, limit, with_rows=True)
        if wave is None:
            return 0
        assert actor is not None
        t0 = time.monotonic()
        results = self.scripts.run_wave(actor, step, wave.subjects)
        busy = (time.monotonic() - t0) * 1000
        return self.store.commit(wave, results, busy)

    def is_inline_script(self, step: StepDef) -> bool:
        """A script actor that says it is quick (`params.inline = true`) runs inside
        the wave's transaction like SQL: no lease, half the writes. Its step timeout
        bounds how long the transaction stays open; slow or model-like work should
        keep the default (leased, no connection held)."""
        actor = self.ctx.wf.actor_of(step)
        if actor is None or actor.kind != "script":
            return False
        return bool(self.ctx.wf.params_of(step).get("inline", False))

    def _compute_inline(self, c: psycopg.Connection[Any], wave: InlineWave) -> list[StepResult]:
        """An inline wave's results, computed inside the transaction that commits them."""
        step = wave.step
        actor = self.ctx.wf.actor_of(step)
        if step.kind == "gate":
            return run_gate(c, wave)
        if actor is not None and actor.kind == "script":
            return self.scripts.run_wave(actor, step, self.store.subjects_of(c, wave))
        assert actor is not None
        return run_sql_actor(c, wave, actor.target)


def run_gate(c: psycopg.Connection[Any], wave: InlineWave) -> list[StepResult]:
    """A gate's general road: one statement over the wave, one outcome per subject
    (a subject the gate did not return gets the default outcome)."""
    step, ids, started = wave.step, wave.ids, wave.started
    default = str(step.params.get("default_outcome", "RUN"))
    try:
        with c.transaction():  # a savepoint: a broken gate must not poison the wave
            rows = c.execute(step.gate_sql or "", wave.params()).fetchall()
    except psycopg.Error as exc:
        return failed_wave(ids, f"gate SQL failed: {first_line(exc)}", started)
    outcomes: dict[str, str] = {}
    for r in rows:
        sid = str(r.get("subject_id"))
        outcomes[sid] = str(r.get("outcome") or default).upper()
    # Ids the gate returned that are not in the wave are ignored: a gate can only
    # decide for the subjects it was asked about.
    finished = utcnow()
    return [StepResult(i, True, outcomes.get(i, default), started_at=started,
                       finished_at=finished) for i in ids]


def run_sql_actor(c: psycopg.Connection[Any], wave: InlineWave,
                  target: str) -> list[StepResult]:
    """A SQL actor: its statement over the whole wave, with the wave's earlier outputs
    bound as %(batch)s; rows it returns may name each subject's outcome and output."""
    ids, started = wave.ids, wave.started
    params = wave.params()
    params["batch"] = Jsonb([{"subject_id": i, "outputs": wave.outputs.get(i, {})}
                             for i in ids])
    try:
        with c.transaction():
            cur = c.execute(target, params)
            rows = cur.fetchall() if cur.description else []
    except psycopg.Error as exc:
        return failed_wave(ids, f"SQL actor failed: {first_line(exc)}", started)
    finished = utcnow()
    by_id: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "subject_id" in r:
            by_id[str(r["subject_id"])] = r
    results = []
    for i in ids:
        r = by_id.get(i, {})
        outcome = str(r.get("outcome") or "DONE").upper()
        results.append(StepResult(i, True, outcome, output=r.get("output"), started_at=started,
                                  finished_at=finished))
    return results


def failed_wave(ids: list[str], error: str, started: datetime) -> list[StepResult]:
    return [StepResult.failure(i, error, started_at=started) for i in ids]
