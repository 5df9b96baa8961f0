"""The circuit breaker per actor, whose state lives in interp.actor_health so that
every worker sees it.

Each worker keeps the states it last read (refreshed a few times a second by
the run control) and decides from that copy whether a step may claim; only a
half-open probe, which exactly one worker may send, asks the database. Wave
commits report their results here, inside the commit's transaction, so a
breaker opens or closes together with the checkpoints that made it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import psycopg

from .actor_api import StepResult
from .definitions import StepDef
from .queries import Q
from .run_context import RunContext

log = logging.getLogger(__name__)


class Breaker:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._states: dict[str, dict[str, Any]] = {}

    def refresh(self) -> None:
        """Reads the state of every actor the workflow uses."""
        actors = sorted({s.actor for s in self.ctx.wf.steps.values() if s.actor})
        rows = self.ctx.db.run(lambda c: c.execute(Q["breaker_states"], {"actors": actors})
                               .fetchall())
        self._states = {r["actor"]: r for r in rows}

    def allows(self, step: StepDef) -> int | None:
        """How many subjects this step may claim now: None = as many as it likes,
        0 = none (breaker open), 1 = a half-open probe."""
        if not step.actor:
            return None
        state = self._states.get(step.actor)
        if not state or state["state"] == "closed":
            return None
        if self.cooling(step):
            return 0  # no need to ask the database yet
        took = self.ctx.db.run(lambda c: c.execute(Q["breaker_take_probe"], {
            "actor": step.actor, "worker_id": self.ctx.worker_id,
            "cooldown_s": self._cooldown(step), "lease_s": self.ctx.opt.lease_s}).fetchone())
        return 1 if took else 0

    def cooling(self, step: StepDef) -> bool:
        """The step's breaker is open and its cool-down has not passed (as last seen)."""
        state = self._states.get(step.actor or "")
        if not state or state["state"] != "open" or state.get("opened_at") is None:
            return False
        return (datetime.now(UTC) - state["opened_at"]).total_seconds() < self._cooldown(step)

    def is_closed(self, step: StepDef) -> bool:
        """Whether the step's breaker is closed, as last seen (or last recorded here)."""
        state = self._states.get(step.actor or "")
        return not state or state["state"] == "closed"

    def record(self, c: psycopg.Connection[Any], step: StepDef,
               results: list[StepResult]) -> None:
        """Counts a wave's actor failures, in the transaction that commits the wave."""
        if not step.actor:
            return
        failures = [r for r in results if r.actor_failure]
        successes = sum(1 for r in results if r.ok)
        cached = self._states.get(step.actor)
        if not failures and (cached is None or (cached["state"] == "closed"
                                                and cached["consecutive_failures"] == 0)):
            return  # the common case costs no statement
        row = c.execute(Q["breaker_lock"], {"actor": step.actor}).fetchone()
        current = row["consecutive_failures"] if row else 0
        if successes:
            count = 0
            state = "closed"
        else:
            count = current + len(failures)
            state = "open" if count >= self._threshold(step) or (
                row and row["state"] == "half_open") else "closed"
        last_error = failures[-1].error if failures else None
        c.execute(Q["breaker_write"], {"actor": step.actor, "state": state, "failures": count,
                                       "last_error": last_error})
        if state == "open" and (not row or row["state"] != "open"):
            log.warning("breaker for actor %s opened after %d failures: %s", step.actor, count,
                        last_error)
        self._states[step.actor] = {"state": state, "consecutive_failures": count,
                                    "opened_at": datetime.now(UTC) if state == "open"
                                    else None}

    def _cooldown(self, step: StepDef) -> float:
        return float(self._actor_params(step).get("breaker_cooldown_s",
                                                  self.ctx.opt.breaker_cooldown_s))

    def _threshold(self, step: StepDef) -> int:
        return int(self._actor_params(step).get("breaker_threshold",
                                                self.ctx.opt.breaker_threshold))

    def _actor_params(self, step: StepDef) -> dict[str, Any]:
        actor = self.ctx.wf.actors.get(step.actor or "")
        return actor.params if actor else {}
