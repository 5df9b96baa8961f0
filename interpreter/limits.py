"""Per-actor rate and concurrency limits, shared by every worker through the
database (interp.actor_limits), for actors that call a paid or fragile service:
an API behind a script actor, a remote model server.

An actor's params may set:

- `rate_per_s`: subjects per second the actor may be given, by all workers
  together: a token bucket (a row of interp.actor_limits: tokens, refilled_at)
  that refills at that rate up to `rate_burst` tokens (default: one second's
  worth, at least 1). A claim takes one token per subject.
- `max_concurrency`: subjects of the actor leased at once, by all workers
  together, over every step (of any workflow) that uses it.

How a claim keeps them (WaveStore.claim, and run_inline for an inline wave):
in the claim's transaction it first locks the actor's row (`take`, refilling
the bucket), so that claims of one actor follow each other across workers and
each one sees the leases the one before it committed; it counts the actor's
leased subjects in a statement of its own, after the lock, since a statement's
snapshot is taken when it starts; it claims at most the allowance (a smaller
wave, never an overdraft) and spends one token per subject it got (`spend`).
An inline wave (a gate, a SQL actor, an inline script) holds no lease: it
holds the actor's row lock until it commits instead, so for a limited actor
inline waves run one at a time, each of at most the allowance.

When the allowance is 0 the worker notes until when the actor is held (the
time the bucket needs for its next token, or CONCURRENCY_RECHECK_S for a full
concurrency limit) and its lanes skip the actor's steps until then, and sleep
that long when nothing else is ready: no claim is tried meanwhile, so a held
actor costs no polling storm.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from .db import one
from .definitions import StepDef
from .errors import DefinitionError
from .queries import Q
from .run_context import RunContext

# A step held by its actor's max_concurrency is looked at again after this long:
# its leases end when other workers commit, which no worker hears of.
CONCURRENCY_RECHECK_S = 0.25


@dataclass(frozen=True)
class LimitSettings:
    """An actor's limits, from its params (None: that limit is not set)."""

    rate_per_s: float | None
    burst: float
    max_concurrency: int | None

    @classmethod
    def of(cls, actor: str, params: dict[str, Any]) -> LimitSettings | None:
        """The actor's limits, or None when it has none. Raises DefinitionError for a
        value that is not a positive number."""
        rate = _positive(actor, params, "rate_per_s")
        concurrency = _positive(actor, params, "max_concurrency")
        if rate is None and concurrency is None:
            return None
        # The same default as interp.actor_limited (schema/0009_limits_priorities.sql).
        burst = _positive(actor, params, "rate_burst") or max(1.0, rate or 0.0)
        return cls(rate, max(1.0, burst),
                   None if concurrency is None else max(1, int(concurrency)))


def _positive(actor: str, params: dict[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or not math.isfinite(value):
        raise DefinitionError(f"actor {actor}: params.{key} must be a positive number, "
                              f"not {value!r}")
    return float(value)


def allowance(settings: LimitSettings, want: int, tokens: float, leased: int) -> int:
    """How many subjects a claim that wants `want` may take now, with `tokens` in
    the actor's bucket and `leased` of its subjects leased by all workers."""
    n = want
    if settings.rate_per_s is not None:
        n = min(n, math.floor(tokens + 1e-9))
    if settings.max_concurrency is not None:
        n = min(n, settings.max_concurrency - leased)
    return max(0, n)


def held_for(settings: LimitSettings, tokens: float, leased: int) -> float:
    """Seconds until a claim of the actor may get a subject again, once a claim got
    none: until the bucket's next token, or a recheck of a full concurrency limit."""
    wait = 0.0
    if settings.rate_per_s is not None and tokens < 1:
        wait = (1 - tokens) / settings.rate_per_s
    if settings.max_concurrency is not None and leased >= settings.max_concurrency:
        wait = max(wait, CONCURRENCY_RECHECK_S)
    return wait


class Limiter:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._held_until: dict[str, float] = {}   # actor -> monotonic time

    def settings(self, step: StepDef) -> LimitSettings | None:
        """The limits of the step's actor (an actor's own params, as its breaker's)."""
        actor = self.ctx.wf.actors.get(step.actor or "")
        return LimitSettings.of(actor.name, actor.params) if actor else None

    def held_for(self, step: StepDef) -> float:
        """Seconds this worker leaves the step alone because its actor is held by a
        limit (0: it may claim)."""
        if not step.actor:
            return 0.0
        with self._lock:
            until = self._held_until.get(step.actor)
        return max(0.0, until - time.monotonic()) if until is not None else 0.0

    def take(self, c: psycopg.Connection[Any], step: StepDef, want: int) -> int:
        """In a claim's transaction: locks the actor's limits and returns how many
        subjects the claim may take (want, when the actor has no limits: then no
        statement runs). The lock is held until the transaction ends."""
        settings = self.settings(step)
        if settings is None or want <= 0:
            return want
        actor = step.actor or ""
        tokens = float(one(c.execute(Q["limits_take"], {
            "actor": actor, "rate": settings.rate_per_s or 0.0,
            "burst": settings.burst}))["tokens"])
        leased = 0
        if settings.max_concurrency is not None:
            # A statement of its own: its snapshot is taken now, after the lock.
            leased = int(one(c.execute(Q["limits_leased"], {"actor": actor}))["leased"])
        n = allowance(settings, want, tokens, leased)
        if n == 0:
            self._hold(actor, held_for(settings, tokens, leased))
        return n

    def spend(self, c: psycopg.Connection[Any], step: StepDef, claimed: int) -> None:
        """Takes a token per subject claimed from the actor's bucket, in the claim's
        transaction (nothing for an actor without a rate)."""
        settings = self.settings(step)
        if settings is None or settings.rate_per_s is None or claimed <= 0:
            return
        c.execute(Q["limits_spend"], {"actor": step.actor, "n": claimed})

    def _hold(self, actor: str, seconds: float) -> None:
        with self._lock:
            self._held_until[actor] = time.monotonic() + seconds
