"""The circuit breaker per actor, whose state lives in interp.actor_health so that
every worker sees it.

Each worker keeps the states it last read (refreshed a few times a second by
the run lifecycle) and decides from that copy whether a step may claim; only a
half-open probe, which exactly one worker may send, asks the database. Wave
commits report their results here, inside the commit's transaction, so a
breaker opens or closes together with the checkpoints that made it.

The breaker judges an actor by its last `breaker_window` subjects (default
twice `breaker_threshold`): it opens when `breaker_threshold` of them were
actor failures. A wave with a success among many failures therefore does not
reset it, and a streak of `breaker_threshold` failed subjects always opens it.
The settings are the actor's params: a breaker is the actor's, shared by every
step and workflow that uses it.

A probe is held like a lease: the heartbeat renews it (`renew_probes`) while
its wave runs, the commit of that wave settles it, and a lane whose probe wave
ends without a commit gives it back (`end_probe`). Another worker may take it
over only when its owner stopped renewing it for a lease period (it died).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from .actor_api import StepResult
from .db import Database
from .definitions import StepDef
from .errors import first_line
from .queries import Q
from .run_context import RunContext

log = logging.getLogger(__name__)

FAILED, SUCCEEDED = "F", "S"


@dataclass(frozen=True)
class BreakerSettings:
    """An actor's breaker settings: its params, else the run's options."""

    threshold: int      # failed subjects in the window that open the breaker
    cooldown_s: float   # how long it stays open before a probe
    window: int         # how many of the actor's last subjects are judged

    @classmethod
    def of(cls, params: dict[str, Any], threshold: int, cooldown_s: float) -> BreakerSettings:
        threshold = max(1, int(params.get("breaker_threshold", threshold)))
        window = max(threshold, int(params.get("breaker_window", 2 * threshold)))
        return cls(threshold, float(params.get("breaker_cooldown_s", cooldown_s)), window)


def wave_marks(failures: int, successes: int, window: int) -> str:
    """A wave's results as window marks. A wave larger than the window is scaled
    down to it, keeping its failure rate, so its order does not decide the verdict."""
    total = failures + successes
    if total > window:
        failures = round(failures * window / total)
        successes = window - failures
    return SUCCEEDED * successes + FAILED * failures


def next_state(state: str | None, recent: str, failures: int, successes: int,
               settings: BreakerSettings) -> tuple[str, str]:
    """The breaker's state and window after a wave with these actor failures and
    successes. A half-open breaker (a probe in flight) closes, with a fresh window,
    on a success, and re-opens otherwise; else the window decides."""
    if state == "half_open" and successes and not failures:
        return "closed", ""
    recent = (recent + wave_marks(failures, successes, settings.window))[-settings.window:]
    if state == "half_open":
        return "open", recent  # the probe failed, or told nothing (not an actor verdict)
    if recent.count(FAILED) >= settings.threshold:
        return "open", recent
    # An open breaker closes on a success (a wave claimed before it opened); a wave
    # with no success leaves it as it is.
    return ("closed" if successes or state is None else state), recent


class Breaker:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._states: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._probes: set[str] = set()   # actors whose half-open probe this worker holds

    def refresh(self) -> None:
        """Reads the state of every actor the workflow uses."""
        actors = sorted({s.actor for s in self.ctx.wf.steps.values() if s.actor})
        rows = self.ctx.db.run(lambda c: c.execute(Q["breaker_states"], {"actors": actors})
                               .fetchall())
        self._states = {r["actor"]: r for r in rows}

    def allows(self, step: StepDef) -> int | None:
        """How many subjects this step may claim now: None = as many as it likes,
        0 = none (breaker open), 1 = a half-open probe, which the caller must end
        with end_probe when its wave is over."""
        if not step.actor:
            return None
        state = self._states.get(step.actor)
        if not state or state["state"] == "closed":
            return None
        if self.cooling(step):
            return 0  # no need to ask the database yet
        took = self.ctx.db.run(lambda c: c.execute(Q["breaker_take_probe"], {
            "actor": step.actor, "worker_id": self.ctx.worker_id,
            "cooldown_s": self.settings(step).cooldown_s,
            "lease_s": self.ctx.opt.lease_s}).fetchone())
        if not took:
            return 0
        with self._lock:
            self._probes.add(step.actor)
        return 1

    def end_probe(self, step: StepDef) -> None:
        """Ends this worker's probe through the step's breaker once its wave is over.
        A commit has usually settled it already (open or closed); if not (nothing
        was claimed, the wave was released, it failed), the breaker goes back to
        open with its cool-down passed, so the next claim may probe at once."""
        actor = step.actor or ""
        with self._lock:
            if actor not in self._probes:
                return
            self._probes.discard(actor)
        try:
            self.ctx.db.run(lambda c: c.execute(Q["breaker_return_probe"], {
                "actor": actor, "worker_id": self.ctx.worker_id}), retry=False)
        except Exception as exc:  # noqa: BLE001 - unrenewed, it expires after a lease period
            log.warning("could not give back the probe of actor %s: %s", actor, first_line(exc))

    def held_probes(self) -> list[str]:
        with self._lock:
            return sorted(self._probes)

    def renew_probes(self, c: psycopg.Connection[Any]) -> None:
        """Keeps this worker's probes its own, in the caller's transaction (the
        heartbeat's), so no second probe is sent while the first still runs."""
        actors = self.held_probes()
        if actors:
            c.execute(Q["breaker_renew_probes"], {"actors": actors,
                                                   "worker_id": self.ctx.worker_id})

    def cooling(self, step: StepDef) -> bool:
        """The step's breaker is open and its cool-down has not passed (as last seen)."""
        state = self._states.get(step.actor or "")
        if not state or state["state"] != "open" or state.get("opened_at") is None:
            return False
        age = (datetime.now(UTC) - state["opened_at"]).total_seconds()
        return age < self.settings(step).cooldown_s

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
        settings = self.settings(step)
        state, recent = next_state(row["state"] if row else None, row["recent"] if row else "",
                                   len(failures), successes, settings)
        count = recent.count(FAILED)
        last_error = failures[-1].error if failures else None
        c.execute(Q["breaker_write"], {"actor": step.actor, "state": state, "failures": count,
                                       "recent": recent, "last_error": last_error})
        if state == "open" and (not row or row["state"] != "open"):
            log.warning("breaker for actor %s opened: %d of its last %d subjects failed: %s",
                        step.actor, count, len(recent), last_error)
        self._states[step.actor] = {"state": state, "consecutive_failures": count,
                                    "opened_at": datetime.now(UTC) if state == "open"
                                    else None}

    def settings(self, step: StepDef) -> BreakerSettings:
        actor = self.ctx.wf.actors.get(step.actor or "")
        opt = self.ctx.opt
        return BreakerSettings.of(actor.params if actor else {}, opt.breaker_threshold,
                                  opt.breaker_cooldown_s)


def reset_breaker(db: Database, actor: str) -> bool:
    """Closes an actor's breaker by hand (its window emptied, any probe dropped).
    Returns False when the actor has no breaker row (it never failed: closed).
    Running workers see it at their next look at the breakers (within a second)."""
    row = db.run(lambda c: c.execute(Q["breaker_reset"], {"actor": actor}).fetchone())
    return row is not None
