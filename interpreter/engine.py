"""The run loop: admit, pick a wave, run it, commit it, repeat.

Two lanes run in one process. The cheap lane (main thread) runs gates, SQL
actors and script actors. The model lane (one thread, which alone owns the
resident models) runs model steps; it claims a wave, lets go of the
database while it generates, and hands the commit to its own DB thread while
it goes on with the next, prefetched, wave.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .actor_api import StepResult, Subject, utcnow
from .wave_rules import DEFAULT_MAX_VISITS, Claimed, build_commit
from .db import Database, one
from .definitions import StepDef, Workflow, load_workflow
from .errors import DatabaseUnreachable, DefinitionError, InterpError, first_line
from .queries import Q
from .scripts import ScriptRunner

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    batch_size: int = 100
    model_batch_size: int = 8
    limit: int | None = None
    until_idle: bool = False
    worker_id: str | None = None
    lease_s: float = 60.0
    poll_s: float = 1.0
    switch_ratio: float = 4.0       # switch models only for a backlog this many times larger
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    model_memory_mb: int = 4096
    validate: bool = True


@dataclass
class RunSummary:
    run_id: int
    worker_id: str
    waves: int = 0
    checkpoints: int = 0
    admitted: int = 0
    status: str = "finished"
    by_step: dict[int, int] = field(default_factory=dict)
    model_loads: int = 0
    model_switches: int = 0


@dataclass
class Wave:
    step: StepDef
    wave_id: int
    claimed: dict[str, Claimed]
    subjects: list[Subject]
    model: str | None = None
    claimed_at: float = field(default_factory=time.monotonic)


CONTROL_INTERVAL_S = 0.5


class _PartialGateWave(Exception):
    """gate_wave moved some subjects of the wave but not all: never expected, since the
    ids are locked, but if it happens the wave is rolled back and redone."""


def gate_body(gate_sql: str) -> str:
    """A gate's SQL as the body of a CTE: without the trailing semicolons that
    end a statement but cannot end a subquery."""
    return gate_sql.strip().rstrip(";").rstrip()


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Runner:
    def __init__(self, db: Database, workflow_id: int, options: RunOptions | None = None,
                 stop: threading.Event | None = None):
        self.db = db
        self.workflow_id = workflow_id
        self.opt = options or RunOptions()
        self.worker_id = self.opt.worker_id or default_worker_id()
        self.stop = stop or threading.Event()
        self.scripts = ScriptRunner()
        self.wf: Workflow = db.run(lambda c: load_workflow(c, workflow_id))
        self.key_type = self._key_type()
        self.run_id = 0
        self.summary: RunSummary | None = None
        self._lock = threading.Lock()
        self._active_waves: set[int] = set()
        self._breakers: dict[str, dict[str, Any]] = {}
        self._model_busy = threading.Event()
        self._model_error: BaseException | None = None
        self._last_reap = 0.0
        self._pool = None

    # ------------------------------------------------------------ set-up

    def _key_type(self) -> str:
        row = self.db.run(lambda c: c.execute(Q["key_type"], {
            "table": self.wf.subject_table, "key": self.wf.subject_key}).fetchone())
        if not row or not row["key_type"]:
            raise DefinitionError(
                f"workflow {self.wf.id}: subject table {self.wf.subject_table} has no column "
                f"{self.wf.subject_key}")
        return str(row["key_type"])

    def _table_ident(self) -> sql.Composable:
        parts = self.wf.subject_table.split(".")
        return sql.Identifier(*parts)

    def validate(self) -> None:
        from .validate import validate_workflow

        problems = self.db.run(lambda c: validate_workflow(c, self.wf))
        if problems:
            raise DefinitionError(
                f"workflow {self.wf.id} is not valid ({len(problems)} problem(s)): "
                + "; ".join(problems) + " — see `interp workflow validate "
                + str(self.wf.id) + "`")

    # ------------------------------------------------------------ the run

    def run(self) -> RunSummary:
        if self.opt.validate:
            self.validate()
        self.run_id = self.db.run(lambda c: one(c.execute(Q["start_run"], {
            "workflow_id": self.wf.id, "worker_id": self.worker_id, "host": socket.gethostname(),
            "pid": os.getpid(), "version": self.wf.version,
            "args": Jsonb({"batch_size": self.opt.batch_size, "limit": self.opt.limit,
                           "until_idle": self.opt.until_idle}),
        }))["run_id"])
        self.summary = RunSummary(self.run_id, self.worker_id)
        status, error = "finished", None
        lost_db = False
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        model_lane = None
        try:
            self.summary.admitted = self.admit(self.opt.limit)
            if any(self.wf.is_model_step(s) for s in self.wf.steps.values()):
                model_lane = threading.Thread(target=self._model_lane_main, name="model-lane",
                                              daemon=True)
                model_lane.start()
            self._cheap_lane()
            if self.stop.is_set():
                status = "stopped"
        except BaseException as exc:
            status, error = "failed", first_line(exc)
            lost_db = isinstance(exc, DatabaseUnreachable)
            self.stop.set()
            raise
        finally:
            self.stop.set()
            if model_lane is not None:
                model_lane.join()
            self.scripts.shutdown()
            if self._model_error is not None and status == "finished":
                status, error = "failed", first_line(self._model_error)
            self.summary.status = status
            lost_db = lost_db or isinstance(self._model_error, DatabaseUnreachable)
            if not lost_db:  # else the database is why we stop: do not wait for it again
                try:
                    self.db.run(lambda c: c.execute(Q["finish_run"], {
                        "run_id": self.run_id, "status": status, "error": error}),
                        retry=False)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    log.warning("could not record the end of run %s", self.run_id)
        if self._model_error is not None:
            raise self._model_error
        return self.summary

    def admit(self, limit: int | None) -> int:
        total = 0
        for ep in self.wf.entry_points:
            if not ep.enabled:
                continue
            query = sql.SQL(Q["admit"]).format(admit=sql.SQL(ep.admit_sql))  # type: ignore[arg-type]

            def do(c: psycopg.Connection[Any], query=query, ep=ep, limit=limit) -> int:
                ids = [r["subject_id"] for r in c.execute(query, {
                    "workflow_id": self.wf.id, "entry_point": ep.name,
                    "first_step": ep.first_step, "limit": limit})]
                if ids:
                    c.execute(Q["continue_visits"], {"workflow_id": self.wf.id, "ids": ids})
                return len(ids)

            try:
                n = self.db.run(do)
            except psycopg.Error as exc:
                raise DefinitionError(
                    f"entry point {ep.name!r} of workflow {self.wf.id} failed: {first_line(exc)}"
                ) from exc
            total += n
            if limit is not None:
                limit -= n
                if limit <= 0:
                    break
        if total:
            log.info("admitted %d subjects", total)
        return total

    # ------------------------------------------------------------ control

    def _refresh_control(self) -> bool:
        """Reloads the definition if it changed; returns whether the workflow is paused."""
        row = self.db.run(lambda c: c.execute(Q["control"], {"workflow_id": self.wf.id})
                          .fetchone())
        if row is None:
            raise InterpError(f"workflow {self.wf.id} was deleted during the run")
        if row["version"] != self.wf.version:
            # Edits take effect at the next wave: waves in flight finish under the
            # definition they started with (docs/running.md).
            log.warning("workflow %s changed (version %s -> %s); reloading", self.wf.id,
                        self.wf.version, row["version"])
            self.wf = self.db.run(lambda c: load_workflow(c, self.workflow_id))
            if self.opt.validate:
                self.validate()
        return bool(row["paused"])

    def _reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap < min(5.0, self.opt.lease_s / 4):
            return
        self._last_reap = now
        n = self.db.run(lambda c: c.execute(Q["reap_expired_leases"],
                                            {"workflow_id": self.wf.id}).rowcount)
        if n:
            log.warning("returned %d subjects with expired leases to the queue", n)

    def _refresh_breakers(self) -> None:
        actors = sorted({s.actor for s in self.wf.steps.values() if s.actor})
        rows = self.db.run(lambda c: c.execute(Q["breaker_states"], {"actors": actors})
                           .fetchall())
        self._breakers = {r["actor"]: r for r in rows}

    def _breaker_allows(self, step: StepDef) -> int | None:
        """How many subjects this step may claim now: None = as many as it likes,
        0 = none (breaker open), 1 = a half-open probe."""
        if not step.actor:
            return None
        state = self._breakers.get(step.actor)
        if not state or state["state"] == "closed":
            return None
        if self.breaker_cooling(step):
            return 0  # no need to ask the database yet
        took = self.db.run(lambda c: c.execute(Q["breaker_take_probe"], {
            "actor": step.actor, "worker_id": self.worker_id,
            "cooldown_s": self._cooldown(step), "lease_s": self.opt.lease_s}).fetchone())
        return 1 if took else 0

    def _cooldown(self, step: StepDef) -> float:
        actor = self.wf.actors.get(step.actor or "")
        return float((actor.params if actor else {}).get("breaker_cooldown_s",
                                                          self.opt.breaker_cooldown_s))

    def breaker_cooling(self, step: StepDef) -> bool:
        """The step's breaker is open and its cool-down has not passed (as last seen)."""
        state = self._breakers.get(step.actor or "")
        if not state or state["state"] != "open" or state.get("opened_at") is None:
            return False
        return (datetime.now(UTC) - state["opened_at"]).total_seconds() < self._cooldown(step)

    def _threshold(self, step: StepDef) -> int:
        actor = self.wf.actors.get(step.actor or "")
        return int((actor.params if actor else {}).get("breaker_threshold",
                                                       self.opt.breaker_threshold))

    def _record_breaker(self, c: psycopg.Connection[Any], step: StepDef,
                        results: list[StepResult]) -> None:
        if not step.actor:
            return
        failures = [r for r in results if r.actor_failure]
        successes = sum(1 for r in results if r.ok)
        cached = self._breakers.get(step.actor)
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
        self._breakers[step.actor] = {"state": state, "consecutive_failures": count,
                                      "opened_at": datetime.now(UTC) if state == "open"
                                      else None}

    def _heartbeat_loop(self) -> None:
        interval = max(0.5, self.opt.lease_s / 3)
        while not self.stop.wait(interval) or self._active_waves:
            with self._lock:
                waves = list(self._active_waves)
            try:
                def beat(c: psycopg.Connection[Any], waves=waves) -> None:
                    c.execute(Q["run_heartbeat"], {"run_id": self.run_id})
                    if waves:
                        c.execute(Q["renew_leases"], {
                            "workflow_id": self.wf.id, "wave_ids": waves,
                            "worker_id": self.worker_id, "lease_s": self.opt.lease_s})
                self.db.run(beat, retry=False)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("heartbeat failed: %s", first_line(exc))
            if self.stop.is_set() and not self._active_waves:
                return

    # ------------------------------------------------------------ cheap lane

    def _cheap_lane(self) -> None:
        idle_checks = 0
        last_admit = time.monotonic()
        last_control = 0.0
        paused = False
        while not self.stop.is_set():
            if self._model_error is not None:
                return
            if time.monotonic() - last_control >= CONTROL_INTERVAL_S:
                # Pause, definition edits, breakers and expired leases are looked at
                # a few times a second, not before every wave: the claim itself also
                # checks `paused`, so a pause still stops the very next claim.
                last_control = time.monotonic()
                paused = self._refresh_control()
                self._refresh_breakers()
                self._reap()
            if paused:
                if self.opt.until_idle:
                    log.warning("workflow %s is paused; stopping", self.wf.id)
                    self.stop.set()
                    return
                self.stop.wait(self.opt.poll_s)
                last_control = 0.0
                continue
            picked = self._pick_cheap_step(self._ready_steps(cap=1))
            if picked is not None:
                idle_checks = 0
                self._drain(*picked)
                continue
            pending = self._anything_pending()
            if not pending and not self._model_busy.is_set():
                if self.opt.until_idle:
                    # Nothing left: one more admission pass (new rows may have come),
                    # and one more look, since the model lane may just have committed.
                    if self.opt.limit is None and self._admit_more(None):
                        continue
                    idle_checks += 1
                    if idle_checks < 2:
                        continue
                    return
                if time.monotonic() - last_admit > self.opt.poll_s:
                    last_admit = time.monotonic()
                    if self._admit_more(self._admission_left()):
                        continue
            self.stop.wait(min(self.opt.poll_s, 0.05) if pending else self.opt.poll_s)

    def _admission_left(self) -> int | None:
        if self.opt.limit is None:
            return None
        return max(0, self.opt.limit - (self.summary.admitted if self.summary else 0))

    def _admit_more(self, limit: int | None) -> int:
        if limit == 0:
            return 0
        n = self.admit(limit)
        if self.summary is not None:
            self.summary.admitted += n
        return n

    def _ready_steps(self, cap: int) -> dict[int, int]:
        rows = self.db.run(lambda c: c.execute(Q["ready_steps"], {
            "workflow_id": self.wf.id, "cap": cap}).fetchall())
        return {r["step"]: r["ready"] for r in rows}

    def _anything_pending(self) -> bool:
        return bool(self.db.run(lambda c: one(c.execute(Q["anything_pending"], {
            "workflow_id": self.wf.id}))["pending"]))

    def _pick_cheap_step(self, ready: dict[int, int]) -> tuple[StepDef, int | None] | None:
        """The earliest cheap step with ready work whose breaker lets it run, and how
        many it may claim (None: a full wave; 1: a half-open probe)."""
        for number in sorted(ready):
            step = self.wf.steps.get(number)
            if step is None or self.wf.is_model_step(step):
                continue  # a subject parked at a removed step waits; models have a lane
            allowance = self._breaker_allows(step)
            if allowance == 0:
                continue
            return step, allowance
        return None

    def _drain(self, step: StepDef, allowance: int | None) -> None:
        """Runs waves of one step while they come back full: no scheduling query
        between waves of a long backlog."""
        limit = allowance or self.opt.batch_size
        started = time.monotonic()
        while not self.stop.is_set():
            n = self.run_cheap_wave(step, limit)
            if allowance == 1 or n < limit or time.monotonic() - started > CONTROL_INTERVAL_S:
                return
            state = self._breakers.get(step.actor or "")
            if state and state["state"] != "closed":
                return  # this wave opened the breaker

    def run_cheap_wave(self, step: StepDef, limit: int) -> int:
        actor = self.wf.actor_of(step)
        if step.kind == "gate" or (actor and actor.kind == "sql") or self._inline_script(step):
            return self._run_inline_wave(step, limit)
        wave = self._claim(step, limit, with_rows=True)
        if wave is None:
            return 0
        assert actor is not None
        t0 = time.monotonic()
        results = self.scripts.run_wave(actor, step, wave.subjects)
        busy = (time.monotonic() - t0) * 1000
        return self._commit_leased(wave, results, busy)

    # ------------------------------------------------------------ inline waves

    def _inline_script(self, step: StepDef) -> bool:
        """A script actor that says it is quick (`params.inline = true`) runs inside
        the wave's transaction like SQL: no lease, half the writes. Its step timeout
        bounds how long the transaction stays open; slow or model-like work should
        keep the default (leased, no connection held)."""
        actor = self.wf.actor_of(step)
        if actor is None or actor.kind != "script":
            return False
        return bool(self.wf.params_of(step).get("inline", False))

    def _run_inline_wave(self, step: StepDef, limit: int) -> int:
        """Gates, SQL actors and quick scripts: claim, compute and commit in one
        transaction (the row locks are the lease; a crash rolls it all back)."""
        actor = self.wf.actor_of(step)

        def do(c: psycopg.Connection[Any]) -> tuple[int, list[StepResult]]:
            rows = c.execute(Q["lock_inline_wave"], {
                "workflow_id": self.wf.id, "step": step.number, "limit": limit,
                "with_outputs": step.kind != "gate"}).fetchall()
            if not rows:
                return 0, []
            claimed = {r["subject_id"]: Claimed(r["subject_id"], r["attempts"], r["visits"])
                       for r in rows}
            wave_id = one(c.execute(Q["next_wave_id"]))["wave_id"]
            started = utcnow()
            t0 = time.monotonic()
            ids = list(claimed)
            outputs = {r["subject_id"]: r["outputs"] or {} for r in rows}
            if step.kind == "gate" and self._gate_wave(c, step, wave_id, claimed, started):
                self._record_inline_wave(c, step, wave_id, len(ids), started, t0)
                return len(ids), []
            if step.kind == "gate":
                results = self._gate(c, step, ids, started)
            elif actor is not None and actor.kind == "script":
                subjects = self._subjects(c, rows)
                results = self.scripts.run_wave(actor, step, subjects)
            else:
                assert actor is not None
                results = self._sql_actor(c, step, actor.target, ids, outputs, started)
            self._write_results(c, step, wave_id, claimed, results)
            self._record_breaker(c, step, results)
            self._record_inline_wave(c, step, wave_id, len(results), started, t0)
            return len(results), results

        n, _ = self.db.run(do)
        if n:
            self._count(step, n)
        return n

    def _record_inline_wave(self, c: psycopg.Connection[Any], step: StepDef, wave_id: int,
                            n: int, started: datetime, t0: float) -> None:
        c.execute(Q["record_inline_wave"], {
            "wave_id": wave_id, "workflow_id": self.wf.id, "step": step.number,
            "run_id": self.run_id, "size": n, "started": started, "committed": n,
            "busy_ms": (time.monotonic() - t0) * 1000})

    def _gate_wave(self, c: psycopg.Connection[Any], step: StepDef, wave_id: int,
                   claimed: dict[str, Claimed], started: datetime) -> bool:
        """The fast road for a gate wave: one statement runs the gate and commits the
        wave on the server (gate_wave). False when it wrote nothing, because a
        subject needs the general road (an odd outcome, a broken gate...)."""
        table = self.wf.transitions.get(step.number, {})
        ids = list(claimed)
        query = sql.SQL(Q["gate_wave"]).format(  # type: ignore[arg-type]
            gate=sql.SQL(gate_body(step.gate_sql or "")))  # type: ignore[arg-type]
        params = {**self._params(step, ids),
                  "visit": [claimed[i].visits for i in ids],
                  "attempt": [claimed[i].attempts + 1 for i in ids],
                  "t_outcome": list(table), "t_next": list(table.values()),
                  "default_outcome": str(step.params.get("default_outcome", "RUN")),
                  "max_visits": int(step.params.get("max_visits", DEFAULT_MAX_VISITS)),
                  "started": started, "wave_id": wave_id, "run_id": self.run_id,
                  "worker_id": self.worker_id}
        try:
            with c.transaction():  # a savepoint: the general road starts from a clean slate
                moved = c.execute(query, params).rowcount
                if moved not in (0, len(ids)):
                    raise _PartialGateWave(moved)
        except (psycopg.Error, _PartialGateWave) as exc:
            log.debug("gate wave of step %d takes the general road: %s", step.number, exc)
            return False
        return moved == len(ids)

    def _subjects(self, c: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> list[Subject]:
        query = sql.SQL(Q["subject_rows"]).format(  # type: ignore[arg-type]
            subject_table=self._table_ident(), subject_key=sql.Identifier(self.wf.subject_key),
            key_type=sql.SQL(self.key_type))
        found = {r["subject_id"]: r["row"] for r in c.execute(
            query, {"ids": [r["subject_id"] for r in rows]})}
        return [Subject(r["subject_id"], found.get(r["subject_id"]) or {}, r["outputs"] or {},
                        r["attempts"] + 1) for r in rows]

    def _params(self, step: StepDef, ids: list[str]) -> dict[str, Any]:
        return {"ids": ids, "workflow_id": self.wf.id, "step": step.number}

    def _gate(self, c: psycopg.Connection[Any], step: StepDef, ids: list[str],
              started: datetime) -> list[StepResult]:
        default = str(step.params.get("default_outcome", "RUN"))
        try:
            with c.transaction():  # a savepoint: a broken gate must not poison the wave
                rows = c.execute(step.gate_sql or "", self._params(step, ids)).fetchall()
        except psycopg.Error as exc:
            error = f"gate SQL failed: {first_line(exc)}"
            return [StepResult.failure(i, error, started_at=started) for i in ids]
        outcomes: dict[str, str] = {}
        for r in rows:
            sid = str(r.get("subject_id"))
            outcomes[sid] = str(r.get("outcome") or default).upper()
        # Ids the gate returned that are not in the wave are ignored: a gate can only
        # decide for the subjects it was asked about.
        finished = utcnow()
        return [StepResult(i, True, outcomes.get(i, default), started_at=started,
                           finished_at=finished) for i in ids]

    def _sql_actor(self, c: psycopg.Connection[Any], step: StepDef, target: str, ids: list[str],
                   outputs: dict[str, Any], started: datetime) -> list[StepResult]:
        params = self._params(step, ids)
        params["batch"] = Jsonb([{"subject_id": i, "outputs": outputs.get(i, {})} for i in ids])
        try:
            with c.transaction():
                cur = c.execute(target, params)
                rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            error = f"SQL actor failed: {first_line(exc)}"
            return [StepResult.failure(i, error, started_at=started) for i in ids]
        finished = utcnow()
        by_id: dict[str, dict[str, Any]] = {}
        for r in rows:
            if "subject_id" in r:
                by_id[str(r["subject_id"])] = r
        results = []
        for i in ids:
            r = by_id.get(i, {})
            outcome = str(r.get("outcome") or "DONE").upper()
            output = r.get("output")
            results.append(StepResult(i, True, outcome, output=output, started_at=started,
                                      finished_at=finished))
        return results

    # ------------------------------------------------------------ leased waves

    def _claim(self, step: StepDef, limit: int, *, with_rows: bool,
               model: str | None = None) -> Wave | None:
        query = sql.SQL(Q["claim_wave"]).format(  # type: ignore[arg-type]
            subject_table=self._table_ident(), subject_key=sql.Identifier(self.wf.subject_key),
            key_type=sql.SQL(self.key_type))

        def do(c: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            return c.execute(query, {
                "workflow_id": self.wf.id, "step": step.number, "limit": limit,
                "worker_id": self.worker_id, "lease_s": self.opt.lease_s, "run_id": self.run_id,
                "model": model, "with_rows": with_rows}).fetchall()

        rows = self.db.run(do)
        if not rows:
            return None
        wave_id = rows[0]["wave_id"]
        with self._lock:
            self._active_waves.add(wave_id)
        claimed = {r["subject_id"]: Claimed(r["subject_id"], r["attempts"], r["visits"])
                   for r in rows}
        subjects = [Subject(r["subject_id"], r["row"] or {}, r["outputs"] or {},
                            r["attempts"] + 1) for r in rows]
        return Wave(step, wave_id, claimed, subjects, model)

    def _commit_leased(self, wave: Wave, results: list[StepResult], busy_ms: float,
                       events: list[dict[str, Any]] | None = None) -> int:
        step = wave.step
        ids = [r.subject_id for r in results if r.subject_id in wave.claimed]
        leftover = [i for i in wave.claimed if i not in set(ids)]

        def do(c: psycopg.Connection[Any]) -> int:
            fenced = {r["subject_id"] for r in c.execute(Q["fence_wave"], {
                "workflow_id": self.wf.id, "ids": ids, "worker_id": self.worker_id,
                "wave_id": wave.wave_id}).fetchall()}
            kept = [r for r in results if r.subject_id in fenced]
            if len(kept) < len(results):
                log.warning("wave %s: %d result(s) dropped, their lease was lost", wave.wave_id,
                            len(results) - len(kept))
            if kept:
                self._write_results(c, step, wave.wave_id, wave.claimed, kept)
                self._record_breaker(c, step, kept)
            if leftover:
                c.execute(Q["release_wave"], {"workflow_id": self.wf.id,
                                              "wave_id": wave.wave_id,
                                              "worker_id": self.worker_id})
            for e in events or []:
                c.execute(Q["model_event"], {"run_id": self.run_id, "worker_id": self.worker_id,
                                             **e})
            c.execute(Q["finish_wave"], {"wave_id": wave.wave_id, "started": None,
                                         "committed": len(kept), "busy_ms": busy_ms})
            return len(kept)

        try:
            n = self.db.run(do)
        finally:
            with self._lock:
                self._active_waves.discard(wave.wave_id)
        if n:
            self._count(step, n)
        return n

    def release(self, wave: Wave) -> None:
        try:
            self.db.run(lambda c: c.execute(Q["release_wave"], {
                "workflow_id": self.wf.id, "wave_id": wave.wave_id, "worker_id": self.worker_id}))
        finally:
            with self._lock:
                self._active_waves.discard(wave.wave_id)

    def _write_results(self, c: psycopg.Connection[Any], step: StepDef, wave_id: int,
                       claimed: dict[str, Claimed], results: list[StepResult]) -> None:
        cols = build_commit(self.wf, step, claimed, results)
        c.execute(Q["commit_results"], {**cols, "workflow_id": self.wf.id, "step": step.number,
                                        "wave_id": wave_id, "run_id": self.run_id,
                                        "worker_id": self.worker_id})

    def _count(self, step: StepDef, n: int) -> None:
        if self.summary is None:
            return
        with self._lock:
            self.summary.waves += 1
            self.summary.checkpoints += n
            self.summary.by_step[step.number] = self.summary.by_step.get(step.number, 0) + n

    # ------------------------------------------------------------ model lane

    def _model_lane_main(self) -> None:
        try:
            from .model_lane import ModelLane

            ModelLane(self).run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by run()
            log.error("model lane failed: %s", first_line(exc))
            self._model_error = exc
            self.stop.set()


__all__ = ["Runner", "RunOptions", "RunSummary", "Wave"]
