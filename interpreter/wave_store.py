"""The wave store: the run loop's only code that reads and writes the work
queue (interp.subject_state) and the checkpoints (interp.checkpoints). Ops
code (ops/) only reads them, and prunes the checkpoints of ended subjects.

Everything a lane does to a subject goes through its public methods:

- `admit` puts new subjects in the queue (`try_admit`: unless another worker
  is admitting the workflow right now);
- `ready_steps` and `anything_pending` say where work waits;
- `claim` takes a leased wave, `commit` fences and writes it, `release` gives
  it back, and `renew_leases` keeps its leases alive;
- `limit_wait` says how long a step's actor is held by its rate or concurrency
  limit (limits.py): a claim takes no more than the actor's limits allow;
- `run_inline` locks, computes and commits a wave in one transaction, and
  `commit_gate_wave` is a gate's fast road inside it;
- `reap_expired_leases` returns the subjects of dead workers to the queue.

What a result does to its subject (transitions, retries, dead letters) is
decided by the pure rules in wave_rules; this module only moves rows. It also
keeps a bad subject from stopping the others:

- a wave is routed by the definition it was claimed under (Wave.wf,
  InlineWave.wf), not one reloaded while it ran;
- a commit the database refuses for what one subject's row holds is split,
  so the other subjects commit and that subject gets an error checkpoint;
- an author's statement (a gate, a SQL actor) runs in a savepoint bounded by
  its step's timeout_s (waves.actor_statement); a deadlock, a serialization failure,
  a lock timeout or a cancel there redoes the whole wave, attempts uncounted;
- a subject whose lease expired REAPS_PER_ATTEMPT times at one step (its
  worker died on it) is charged an attempt, and after a first expiry it runs
  in a wave of its own, so a subject that kills its worker ends dead-lettered
  and alone.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from .actor_api import StepResult, Subject, failed_wave, utcnow
from .breaker import Breaker
from .db import one
from .definitions import EntryPoint, StepDef, Workflow
from .errors import (
    DefinitionError,
    InternalError,
    StatementFailed,
    StatementTimedOut,
    TransientWaveError,
    first_line,
)
from .limits import Limiter
from .queries import Q
from .run_context import RunContext
from .wave_rules import DEFAULT_MAX_VISITS, Claimed, build_commit, clean_text, normalise_result
from .waves import (
    InlineWave,
    InlineWork,
    Wave,
    actor_statement,
    gate_body,
    is_refusal,
)

log = logging.getLogger(__name__)

# A subject whose lease expires this many times at one step (the worker running
# it died or hung: a segfault in a native library, an OOM kill) is charged one
# failed attempt. Not 1: a worker killed for an unrelated reason (a deploy, a
# chaos test) must not cost the subjects it held an attempt; a subject that
# kills its worker is found at its second wave, which it runs alone.
REAPS_PER_ATTEMPT = 2
# A wave whose author statement hits a transient error (deadlock, serialization
# failure, lock timeout, cancel) is redone this many times, uncounted, with a
# short jittered backoff; a further one fails the wave as an ordinary attempt,
# so a statement that always deadlocks still ends (dead-lettered).
TRANSIENT_RETRIES = 3
TRANSIENT_BACKOFF_S = 0.1
# The first half of the admission lock's key (sql/admission.sql), the workflow id
# being the second: any fixed 32-bit number, the same in every worker ("intA").
ADMISSION_LOCK_CLASS = 0x696E7441


class _PartialGateWave(InternalError):
    """gate_wave moved some subjects of the wave but not all: never expected, since the
    ids are locked, but if it happens the wave is rolled back and redone."""


class WaveStore:
    def __init__(self, ctx: RunContext, breaker: Breaker):
        self.ctx = ctx
        # Every commit reports its results to the breaker in the same transaction.
        self.breaker = breaker
        self.key_type = self._key_type()
        self._lock = threading.Lock()
        self._active_waves: set[int] = set()
        # Claims of an actor with limits take them in the claim's transaction.
        self.limiter = Limiter(ctx)

    # ------------------------------------------------------------ the queue

    def admit(self, limit: int | None) -> int:
        """Runs the enabled entry points, once any other worker's admission of this
        workflow has committed; returns how many new subjects they admitted."""
        n = self._admit(limit, wait=True)
        assert n is not None
        return n

    def try_admit(self, limit: int | None) -> int | None:
        """Admits as `admit` does, unless another worker is admitting this workflow
        right now or the workflow is paused: then None, at once (a periodic
        admission skips its turn rather than wait; admission.py). It does not retry
        a lost connection either (DatabaseUnreachable at once): the next turn will."""
        return self._admit(limit, wait=False)

    def _admit(self, limit: int | None, *, wait: bool) -> int | None:
        """All enabled entry points in one transaction, under the workflow's admission
        lock: one set-based statement each (the `admit` query), stopping at limit.
        The subjects are recorded as admitted by this run."""
        wf = self.ctx.wf
        run_id = self.ctx.run_id or None   # 0 or None: outside a recorded run
        entry_points = [ep for ep in wf.entry_points if ep.enabled]
        if not entry_points:
            return 0
        failing: list[EntryPoint] = []    # the entry point whose statement is running

        def do(c: psycopg.Connection[Any]) -> int | None:
            key = {"lock_class": ADMISSION_LOCK_CLASS, "workflow_id": wf.id}
            if wait:
                c.execute(Q["admission_lock"], key)
            else:
                row = c.execute(Q["admission_try_lock"], key).fetchone()
                if row is None or not row["locked"]:
                    return None
            total, left = 0, limit
            for ep in entry_points:
                failing[:] = [ep]
                ids = [r["subject_id"] for r in c.execute(
                    ep.admission_statement(), ep.admission_params(wf.id, left, run_id))]
                if ids:
                    c.execute(Q["continue_visits"], {"workflow_id": wf.id, "ids": ids})
                total += len(ids)
                if left is not None:
                    left -= len(ids)
                    if left <= 0:
                        break
            failing.clear()
            return total

        try:
            n = self.ctx.db.run(do, retry=wait)
        except psycopg.Error as exc:
            if not failing:
                raise
            raise DefinitionError(failing[0].admission_failure(wf.id, exc)) from exc
        if n:
            log.info("admitted %d subjects", n)
        return n

    def ready_steps(self, cap: int) -> dict[int, int]:
        """Ready subjects per step, each counted up to cap."""
        rows = self.ctx.db.run(lambda c: c.execute(Q["ready_steps"], {
            "workflow_id": self.ctx.wf.id, "cap": cap,
            "min_priority": self.ctx.opt.min_priority}).fetchall())
        return {r["step"]: r["ready"] for r in rows}

    def anything_pending(self) -> bool:
        """Whether any subject is still on its way (ready now or later, or leased)."""
        return bool(self.ctx.db.run(lambda c: one(c.execute(Q["anything_pending"], {
            "workflow_id": self.ctx.wf.id, "min_priority": self.ctx.opt.min_priority}))["pending"]))

    def limit_wait(self, step: StepDef) -> float:
        """Seconds until this worker tries the step again because its actor is held
        by a rate or concurrency limit (0: it may claim now)."""
        return self.limiter.held_for(step)

    def reap_expired_leases(self) -> int:
        """Returns subjects whose lease expired to the queue; at the
        REAPS_PER_ATTEMPT-th expiry at one step, with an attempt charged (an error
        checkpoint, and a dead letter after max_attempts). First marks the runs that
        held them lost (their heartbeat is older than their lease), in the same
        transaction."""
        ctx = self.ctx

        def do(c: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            lost = c.execute(Q["mark_lost_runs"], {"workflow_id": ctx.wf.id,
                                                   "run_id": ctx.run_id}).rowcount
            if lost:
                log.warning("marked %d run(s) without a heartbeat as lost", lost)
            return c.execute(Q["reap_expired_leases"], {
                "workflow_id": ctx.wf.id, "reaps_per_attempt": REAPS_PER_ATTEMPT,
                "run_id": ctx.run_id, "worker_id": ctx.worker_id,
                "error": f"its lease expired {REAPS_PER_ATTEMPT} times at this step: the "
                         "worker running it died or hung (does this subject kill its worker?)",
            }).fetchall()

        rows = ctx.db.run(do)
        if rows:
            charged = [r["subject_id"] for r in rows if r["charged"]]
            log.warning("returned %d subjects with expired leases to the queue", len(rows))
            if charged:
                log.warning("charged an attempt to %d subject(s) whose lease expired %d "
                            "times: %s", len(charged), REAPS_PER_ATTEMPT,
                            ", ".join(charged[:10]))
        return len(rows)

    # ------------------------------------------------------------ leased waves

    def claim(self, step: StepDef, limit: int, *, with_rows: bool,
              model: str | None = None) -> Wave | None:
        """Leases up to limit ready subjects of a step, with their subject rows, and no
        more than its actor's limits allow now (None when they allow none: then
        limit_wait says for how long). The wave keeps the definition in force now:
        it commits under it."""
        ctx = self.ctx
        wf = ctx.wf

        def do(c: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            allowed = self.limiter.take(c, step, limit)
            if allowed <= 0:
                return []
            rows = c.execute(self._with_subject_table(Q["claim_wave"]), {
                "workflow_id": ctx.wf.id, "step": step.number, "limit": allowed,
                "worker_id": ctx.worker_id, "lease_s": ctx.opt.lease_s, "run_id": ctx.run_id,
                "model": model, "with_rows": with_rows,
                "min_priority": ctx.opt.min_priority}).fetchall()
            self.limiter.spend(c, step, len(rows))
            return rows

        rows = ctx.db.run(do)
        if not rows:
            return None
        wave_id = rows[0]["wave_id"]
        with self._lock:
            self._active_waves.add(wave_id)
        claimed = {r["subject_id"]: Claimed(r["subject_id"], r["attempts"], r["visits"])
                   for r in rows}
        subjects = [Subject(r["subject_id"], r["row"] or {}, r["outputs"] or {},
                            r["attempts"] + 1, r["visit_of_step"]) for r in rows]
        return Wave(step, wave_id, claimed, subjects, wf, model)

    def commit(self, wave: Wave, results: list[StepResult], busy_ms: float,
               events: list[dict[str, Any]] | None = None,
               started: datetime | None = None) -> int:
        """Writes a leased wave's results whose lease this worker still holds, and
        gives back the subjects that have no result. Returns the checkpoints written.
        `started` (when its actor began on it) becomes the wave's started_at."""
        ctx, step = self.ctx, wave.step
        ids = [r.subject_id for r in results if r.subject_id in wave.claimed]
        leftover = [i for i in wave.claimed if i not in set(ids)]
        # Written on the wave row with the checkpoints: a commit whose reply is lost
        # is recognised by it (in_doubt), not redone and recorded as 0.
        token = str(uuid.uuid4())

        def do(c: psycopg.Connection[Any]) -> int:
            kept = self._fence(c, wave, ids, results)
            if kept:
                kept = self._write_results(c, wave.wf, step, wave.wave_id, wave.claimed, kept)
                self.breaker.record(c, step, kept)
            if leftover:
                c.execute(Q["release_wave"], {"workflow_id": ctx.wf.id, "wave_id": wave.wave_id,
                                              "worker_id": ctx.worker_id})
            for e in events or []:
                c.execute(Q["model_event"], {"run_id": ctx.run_id, "worker_id": ctx.worker_id,
                                             **e, "detail": clean_text(e.get("detail"))})
            c.execute(Q["finish_wave"], {"wave_id": wave.wave_id, "started": started,
                                         "sent_at": utcnow(), "committed": len(kept),
                                         "busy_ms": busy_ms, "token": token})
            return len(kept)

        def in_doubt(c: psycopg.Connection[Any]) -> int | None:
            row = c.execute(Q["leased_wave_in_doubt"], {"wave_id": wave.wave_id,
                                                         "token": token}).fetchone()
            return int(row["committed"]) if row and row["ours"] else None

        try:
            n = ctx.db.run(do, in_doubt=in_doubt)
        finally:
            self._forget(wave.wave_id)
        if n:
            ctx.count_wave(step.number, n)
        return n

    def _fence(self, c: psycopg.Connection[Any], wave: Wave, ids: list[str],
               results: list[StepResult]) -> list[StepResult]:
        """The results whose lease is still this worker's, locked until commit: a
        subject reclaimed by another worker (our lease expired) is dropped."""
        fenced = {r["subject_id"] for r in c.execute(Q["fence_wave"], {
            "workflow_id": self.ctx.wf.id, "ids": ids, "worker_id": self.ctx.worker_id,
            "wave_id": wave.wave_id}).fetchall()}
        kept = [r for r in results if r.subject_id in fenced]
        if len(kept) < len(results):
            log.warning("wave %s: %d result(s) dropped, their lease was lost", wave.wave_id,
                        len(results) - len(kept))
        return kept

    def release(self, wave: Wave) -> None:
        """Gives back a claimed wave that will not run (stop, or a prefetched wave)."""
        try:
            self.ctx.db.run(lambda c: c.execute(Q["release_wave"], {
                "workflow_id": self.ctx.wf.id, "wave_id": wave.wave_id,
                "worker_id": self.ctx.worker_id}))
        finally:
            self._forget(wave.wave_id)

    def release_all(self, c: psycopg.Connection[Any]) -> int:
        """Gives back every wave this worker holds, on the caller's connection (a
        process about to leave: see RunLifecycle.release_now); returns the subjects
        released. In autocommit, each wave given back stays given back."""
        released = 0
        for wave_id in self.active_wave_ids():
            released += c.execute(Q["release_wave"], {
                "workflow_id": self.ctx.wf.id, "wave_id": wave_id,
                "worker_id": self.ctx.worker_id}).rowcount
        return released

    def active_wave_ids(self) -> list[int]:
        """Leased waves claimed and not yet committed or released."""
        with self._lock:
            return list(self._active_waves)

    def renew_leases(self, c: psycopg.Connection[Any], wave_ids: list[int]) -> None:
        """Extends the leases of these waves, in the caller's transaction (the heartbeat's)."""
        c.execute(Q["renew_leases"], {
            "workflow_id": self.ctx.wf.id, "wave_ids": wave_ids,
            "worker_id": self.ctx.worker_id, "lease_s": self.ctx.opt.lease_s})

    def _forget(self, wave_id: int) -> None:
        with self._lock:
            self._active_waves.discard(wave_id)

    # ------------------------------------------------------------ inline waves

    def run_inline(self, step: StepDef, limit: int, work: InlineWork) -> int:
        """Locks a wave, computes it with work and commits it, in one transaction
        (the row locks are the lease; a crash rolls it all back). A gate wave tries
        the fast road first. A transient error in the author's statement redoes
        the transaction, up to TRANSIENT_RETRIES times. Returns the checkpoints
        written."""
        ctx = self.ctx
        n = 0
        # The wave the latest try locked, and the token its commit writes on its row.
        tried: list[tuple[InlineWave, str]] = []
        for tries in range(TRANSIENT_RETRIES + 1):
            last_try = tries == TRANSIENT_RETRIES
            def attempt(c: psycopg.Connection[Any], last: bool = last_try) -> int:
                tried.clear()
                return self._inline_transaction(c, step, limit, work, last_try=last,
                                                tried=tried)

            try:
                n = ctx.db.run(attempt, in_doubt=lambda c: self._inline_in_doubt(c, tried))
                break
            except TransientWaveError as exc:
                delay = TRANSIENT_BACKOFF_S * (2 ** tries) * (0.5 + random.random())
                log.info("step %d: %s; redoing the wave in %.2fs", step.number, exc, delay)
                if ctx.stop.wait(delay):
                    return 0
        if n:
            ctx.count_wave(step.number, n)
        return n

    def _inline_transaction(self, c: psycopg.Connection[Any], step: StepDef, limit: int,
                            work: InlineWork, *, last_try: bool,
                            tried: list[tuple[InlineWave, str]]) -> int:
        wave = self._lock_inline_wave(c, step, limit, last_try=last_try)
        if wave is None:
            return 0
        token = str(uuid.uuid4())
        tried.append((wave, token))
        try:
            if step.kind == "gate" and self.commit_gate_wave(c, wave):
                self._record_inline_wave(c, wave, len(wave.claimed), token)
                return len(wave.claimed)
            results = work(c, wave)
        except StatementTimedOut as exc:
            results = failed_wave(wave.ids, str(exc), wave.started, outcome="TIMEOUT")
        results = self._write_results(c, wave.wf, step, wave.wave_id, wave.claimed, results)
        self.breaker.record(c, step, results)
        self._record_inline_wave(c, wave, len(results), token)
        return len(results)

    def _inline_in_doubt(self, c: psycopg.Connection[Any],
                         tried: list[tuple[InlineWave, str]]) -> int | None:
        """After an inline wave's commit lost its reply: the checkpoints it wrote if
        it reached the database, else None (then the wave is redone). Waits for that
        transaction first, should the server still be running it."""
        if not tried:
            return None
        wave, token = tried[-1]
        c.execute(Q["inline_wave_wait"], {"workflow_id": wave.workflow_id, "ids": wave.ids})
        row = c.execute(Q["inline_wave_in_doubt"], {"wave_id": wave.wave_id,
                                                     "token": token}).fetchone()
        return int(row["committed"]) if row else None

    def _lock_inline_wave(self, c: psycopg.Connection[Any], step: StepDef,
                          limit: int, *, last_try: bool = False) -> InlineWave | None:
        # An actor with limits: its lock, taken here, is held until the wave commits
        # (an inline wave has no lease for other workers to count).
        limit = self.limiter.take(c, step, limit)
        if limit <= 0:
            return None
        rows = c.execute(Q["lock_inline_wave"], {
            "workflow_id": self.ctx.wf.id, "step": step.number, "limit": limit,
            "with_outputs": step.kind != "gate",
            "min_priority": self.ctx.opt.min_priority}).fetchall()
        self.limiter.spend(c, step, len(rows))
        if not rows:
            return None
        claimed = {r["subject_id"]: Claimed(r["subject_id"], r["attempts"], r["visits"])
                   for r in rows}
        wave_id = one(c.execute(Q["next_wave_id"]))["wave_id"]
        return InlineWave(step, self.ctx.wf.id, wave_id, claimed,
                          outputs={r["subject_id"]: r["outputs"] or {} for r in rows},
                          started=utcnow(), wf=self.ctx.wf, last_try=last_try)

    def _record_inline_wave(self, c: psycopg.Connection[Any], wave: InlineWave, n: int,
                            token: str) -> None:
        c.execute(Q["record_inline_wave"], {
            "wave_id": wave.wave_id, "workflow_id": self.ctx.wf.id, "step": wave.step.number,
            "run_id": self.ctx.run_id, "size": n, "started": wave.started, "committed": n,
            "busy_ms": (time.monotonic() - wave.t0) * 1000, "sent_at": utcnow(),
            "token": token})

    def commit_gate_wave(self, c: psycopg.Connection[Any], wave: InlineWave) -> bool:
        """The fast road for a gate wave: one statement runs the gate and commits the
        wave on the server (gate_wave). False when it wrote nothing, because a
        subject needs the general road (an odd outcome, a broken gate...).
        Raises TransientWaveError and StatementTimedOut as actor_statement does."""
        ctx, step = self.ctx, wave.step
        table = wave.wf.transitions.get(step.number, {})
        ids, claimed = wave.ids, wave.claimed
        query = sql.SQL(Q["gate_wave"]).format(  # type: ignore[arg-type]
            gate=sql.SQL(gate_body(step.gate_sql or "")))  # type: ignore[arg-type]
        params = {**wave.params(),
                  "visit": [claimed[i].visits for i in ids],
                  "attempt": [claimed[i].attempts + 1 for i in ids],
                  "t_outcome": list(table), "t_next": list(table.values()),
                  "default_outcome": str(step.params.get("default_outcome", "RUN")),
                  "max_visits": int(step.params.get("max_visits", DEFAULT_MAX_VISITS)),
                  "started": wave.started, "wave_id": wave.wave_id, "run_id": ctx.run_id,
                  "worker_id": ctx.worker_id, "sent_at": utcnow()}
        try:
            # a savepoint: the general road starts from a clean slate
            with actor_statement(c, wave, "gate SQL"):
                moved = c.execute(query, params).rowcount
                if moved not in (0, len(ids)):
                    raise _PartialGateWave(moved)
        except (StatementFailed, _PartialGateWave) as exc:
            log.debug("gate wave of step %d takes the general road: %s", step.number, exc)
            return False
        return moved == len(ids)

    def subjects_of(self, c: psycopg.Connection[Any], wave: InlineWave) -> list[Subject]:
        """The wave's subjects with their subject-table rows and which pass through the
        step each is on, as a script actor sees them."""
        found = {r["subject_id"]: r["row"] for r in c.execute(
            self._with_subject_table(Q["subject_rows"]), {"ids": wave.ids})}
        visits = {r["subject_id"]: r["visit_of_step"] for r in c.execute(
            Q["visits_of_step"], wave.params())}
        return [Subject(i, found.get(i) or {}, wave.outputs.get(i) or {},
                        wave.claimed[i].attempts + 1, visits.get(i, 1)) for i in wave.ids]

    # ------------------------------------------------------------ writing

    def _write_results(self, c: psycopg.Connection[Any], wf: Workflow, step: StepDef,
                       wave_id: int, claimed: dict[str, Claimed],
                       results: list[StepResult]) -> list[StepResult]:
        """The one place checkpoints are written from results (gate_wave is the other
        road, for gates only): every checkpoint and state move in one statement.

        If the database refuses the rows for what one of them holds, the results
        are written in halves, each in its savepoint, down to the subject to
        blame, which gets an error checkpoint instead (an attempt; a dead letter
        after max_attempts). Returns the results as written, their texts cleaned
        (the breaker stores an error text too)."""
        if not results:
            return results
        results = [normalise_result(r) for r in results]
        try:
            with c.transaction():
                self._write_rows(c, wf, step, wave_id, claimed, results)
            return results
        except Exception as exc:  # noqa: BLE001 - anything but a refusal is raised again
            if not is_refusal(exc):
                raise
            if len(results) > 1:
                half = len(results) // 2
                return (self._write_results(c, wf, step, wave_id, claimed, results[:half])
                        + self._write_results(c, wf, step, wave_id, claimed, results[half:]))
            refused = results[0]
            log.warning("step %d: the database refused the result of subject %s: %s",
                        step.number, refused.subject_id, first_line(exc))
            instead = StepResult.failure(
                refused.subject_id, f"the database refused this result: {first_line(exc)}",
                started_at=refused.started_at, actor_failure=refused.actor_failure)
            self._write_rows(c, wf, step, wave_id, claimed, [instead])
            return [instead]

    def _write_rows(self, c: psycopg.Connection[Any], wf: Workflow, step: StepDef,
                    wave_id: int, claimed: dict[str, Claimed],
                    results: list[StepResult]) -> None:
        ctx = self.ctx
        cols = build_commit(wf, step, claimed, results)
        c.execute(Q["commit_results"], {**cols, "workflow_id": wf.id, "step": step.number,
                                        "wave_id": wave_id, "run_id": ctx.run_id,
                                        "worker_id": ctx.worker_id, "sent_at": utcnow()})

    # ------------------------------------------------------------ the subject table

    def _key_type(self) -> str:
        wf = self.ctx.wf
        row = self.ctx.db.run(lambda c: c.execute(Q["key_type"], {
            "table": wf.subject_table, "key": wf.subject_key}).fetchone())
        if not row or not row["key_type"]:
            raise DefinitionError(
                f"workflow {wf.id}: subject table {wf.subject_table} has no column "
                f"{wf.subject_key}")
        return str(row["key_type"])

    def _with_subject_table(self, query: str) -> sql.Composed:
        """A query with the workflow's subject table, key and key type filled in
        (identifiers from the definition, never subject data)."""
        wf = self.ctx.wf
        return sql.SQL(query).format(  # type: ignore[arg-type]
            subject_table=sql.Identifier(*wf.subject_table.split(".")),
            subject_key=sql.Identifier(wf.subject_key), key_type=sql.SQL(self.key_type))
