"""The run's lifecycle: the interp.runs row from start to finish, the heartbeat
that keeps it and the wave leases alive, and the few-times-a-second look at the
database for a pause, an edited definition, breaker states and expired leases.
(run_context.py is the other thing: the state every room of one run shares.)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .breaker import Breaker
from .db import one
from .definitions import load_workflow, workflow_control
from .errors import DefinitionError, first_line
from .queries import Q
from .run_context import RunContext
from .validate import environment_problems, validate_workflow
from .wave_store import WaveStore

log = logging.getLogger(__name__)

# Pause, definition edits, breakers and expired leases are looked at this often,
# not before every wave: the claim itself also checks `paused`, so a pause still
# stops the very next claim.
CONTROL_INTERVAL_S = 0.5
# While stopping, how often the heartbeat looks whether the last leased wave is
# over (an in-memory look, no statement).
STOPPING_POLL_S = 0.1


class RunLifecycle:
    def __init__(self, ctx: RunContext, store: WaveStore, breaker: Breaker):
        self.ctx = ctx
        self.store = store
        self.breaker = breaker
        self._last_control = 0.0
        self._paused = False
        self._last_reap = 0.0
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_ended = threading.Event()

    # ------------------------------------------------------------ the run's record

    def validate(self) -> None:
        """Refuses a definition with problems, listing them."""
        wf = self.ctx.wf
        problems = self.ctx.db.run(lambda c: validate_workflow(c, wf))
        problems += environment_problems(wf)    # e.g. a server key's variable not set here
        if problems:
            raise DefinitionError(
                f"workflow {wf.id} is not valid ({len(problems)} problem(s)): "
                + "; ".join(problems) + " — see `interp workflow validate "
                + str(wf.id) + "`")

    def start_run(self) -> int:
        """Records the run in interp.runs; returns its id."""
        ctx, opt = self.ctx, self.ctx.opt
        return int(ctx.db.run(lambda c: one(c.execute(Q["start_run"], {
            "workflow_id": ctx.wf.id, "worker_id": ctx.worker_id, "host": socket.gethostname(),
            "pid": os.getpid(), "version": ctx.wf.version,
            "args": Jsonb({"batch_size": opt.batch_size, "limit": opt.limit,
                           "until_idle": opt.until_idle, "lease_s": opt.lease_s}),
        }))["run_id"]))

    def finish_run(self, status: str, error: str | None) -> None:
        """Records how the run ended; best effort, once (the database may be why it ended)."""
        try:
            self.ctx.db.run(lambda c: c.execute(Q["finish_run"], {
                "run_id": self.ctx.run_id, "status": status, "error": error}), retry=False)
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.warning("could not record the end of run %s", self.ctx.run_id)

    def release_now(self, timeout_s: float) -> int | None:
        """Gives back this worker's leased waves and half-open probes and records the
        run as stopped, at once, for a process that is about to leave without
        finishing its waves (a second Ctrl-C). Runs on a connection of its own (the
        pool's may be held by a lane in the middle of a statement) and gives up
        after timeout_s (the database may be unreachable: the leases then expire).
        Returns the subjects released, or None when it did not finish in time."""
        done: list[int] = []
        thread = threading.Thread(target=lambda: done.append(self._release(timeout_s)),
                                  name="release-now", daemon=True)
        thread.start()
        thread.join(timeout_s)
        return done[0] if done else None

    def _release(self, timeout_s: float) -> int:
        ctx = self.ctx
        ms = str(max(1, int(timeout_s * 1000)))
        try:
            # autocommit: each wave given back stays given back if a later one times out
            with psycopg.connect(ctx.db.dsn, autocommit=True,
                                 connect_timeout=max(1, int(timeout_s)),
                                 options=f"-c lock_timeout={ms} -c statement_timeout={ms}",
                                 application_name="interp release") as c:
                released = self.store.release_all(c)
                for actor in self.breaker.held_probes():
                    c.execute(Q["breaker_return_probe"], {"actor": actor,
                                                          "worker_id": ctx.worker_id})
                c.execute(Q["finish_run"], {"run_id": ctx.run_id, "status": "stopped",
                                            "error": None})
                return released
        except psycopg.Error as exc:
            log.warning("could not give back the leases at once: %s", first_line(exc))
            return 0

    # ------------------------------------------------------------ heartbeat

    def start_heartbeat(self) -> threading.Thread:
        """Starts the heartbeat; it lives exactly as long as the run's record."""
        self._heartbeat_ended.clear()
        thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        thread.start()
        self._heartbeat = thread
        return thread

    def end_heartbeat(self, timeout: float = 5.0) -> None:
        """Ends the heartbeat when the run ends, leased waves or not: a wave a lane
        left behind (it died) is then no longer renewed, and its lease expires."""
        self._heartbeat_ended.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout)

    def _heartbeat_loop(self) -> None:
        """Beats every lease_s/3 seconds until the run stops and no leased wave is
        left (or the run ends). At most one beat per interval, stopping or not."""
        ctx = self.ctx
        interval = max(0.5, ctx.opt.lease_s / 3)
        next_beat = time.monotonic() + interval
        while not self._heartbeat_ended.is_set():
            if ctx.stop.is_set() and not self.store.active_wave_ids():
                return
            wait = next_beat - time.monotonic()
            if wait > 0:
                # Before stop, sleep on the stop signal, to notice it at once. Once it
                # is set, waiting on it returns at once, so sleep on the end of the
                # run instead and look now and then whether the last wave is over.
                if ctx.stop.is_set():
                    self._heartbeat_ended.wait(min(wait, STOPPING_POLL_S))
                else:
                    ctx.stop.wait(wait)
                continue
            self._beat()
            next_beat = time.monotonic() + interval

    def _beat(self) -> None:
        """One heartbeat: the run's row, the leases of its waves and its probes."""
        ctx = self.ctx
        waves = self.store.active_wave_ids()

        def beat(c: psycopg.Connection[Any]) -> None:
            c.execute(Q["run_heartbeat"], {"run_id": ctx.run_id})
            if waves:
                self.store.renew_leases(c, waves)
            self.breaker.renew_probes(c)

        try:
            ctx.db.run(beat, retry=False)
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
            log.warning("heartbeat failed: %s", first_line(exc))

    # ------------------------------------------------------------ control

    def paused(self) -> bool:
        """Whether the workflow is paused. At most every CONTROL_INTERVAL_S (and at
        every call while paused) it also reloads an edited definition, refreshes the
        breakers and reaps expired leases."""
        if time.monotonic() - self._last_control >= CONTROL_INTERVAL_S:
            self._last_control = time.monotonic()
            self._paused = self._refresh_definition()
            self.breaker.refresh()
            self._reap()
        if self._paused:
            self._last_control = 0.0  # look again after the caller's wait
        return self._paused

    def _refresh_definition(self) -> bool:
        """Reloads the definition if it changed; returns whether the workflow is paused."""
        ctx = self.ctx
        wf_id = ctx.wf.id
        row = ctx.db.run(lambda c: workflow_control(c, wf_id))
        if row["version"] != ctx.wf.version:
            # Edits take effect at the next wave: waves in flight finish under the
            # definition they started with (docs/running.md).
            log.warning("workflow %s changed (version %s -> %s); reloading", ctx.wf.id,
                        ctx.wf.version, row["version"])
            ctx.wf = ctx.db.run(lambda c: load_workflow(c, wf_id))
            if ctx.opt.validate:
                self.validate()
        return bool(row["paused"])

    def _reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap < min(5.0, self.ctx.opt.lease_s / 4):
            return
        self._last_reap = now
        self.store.reap_expired_leases()
