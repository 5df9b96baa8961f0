"""The run's record and its control: the interp.runs row, the heartbeat that
keeps it and the wave leases alive, and the few-times-a-second look at the
database for a pause, an edited definition, breaker states and expired leases.
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
from .definitions import load_workflow
from .errors import DefinitionError, InterpError, first_line
from .queries import Q
from .run_context import RunContext
from .validate import validate_workflow
from .wave_store import WaveStore

log = logging.getLogger(__name__)

# Pause, definition edits, breakers and expired leases are looked at this often,
# not before every wave: the claim itself also checks `paused`, so a pause still
# stops the very next claim.
CONTROL_INTERVAL_S = 0.5


class RunControl:
    def __init__(self, ctx: RunContext, store: WaveStore, breaker: Breaker):
        self.ctx = ctx
        self.store = store
        self.breaker = breaker
        self._last_control = 0.0
        self._paused = False
        self._last_reap = 0.0

    # ------------------------------------------------------------ the run's record

    def validate(self) -> None:
        """Refuses a definition with problems, listing them."""
        wf = self.ctx.wf
        problems = self.ctx.db.run(lambda c: validate_workflow(c, wf))
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

    # ------------------------------------------------------------ heartbeat

    def start_heartbeat(self) -> threading.Thread:
        thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def _heartbeat_loop(self) -> None:
        """Beats every lease_s/3 seconds until the run stops and no leased wave is left."""
        ctx = self.ctx
        interval = max(0.5, ctx.opt.lease_s / 3)
        while not ctx.stop.wait(interval) or self.store.active_wave_ids():
            waves = self.store.active_wave_ids()
            try:
                def beat(c: psycopg.Connection[Any], waves=waves) -> None:
                    c.execute(Q["run_heartbeat"], {"run_id": ctx.run_id})
                    if waves:
                        self.store.renew_leases(c, waves)
                ctx.db.run(beat, retry=False)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("heartbeat failed: %s", first_line(exc))
            if ctx.stop.is_set() and not self.store.active_wave_ids():
                return

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
        row = ctx.db.run(lambda c: c.execute(Q["control"], {"workflow_id": ctx.wf.id})
                         .fetchone())
        if row is None:
            raise InterpError(f"workflow {ctx.wf.id} was deleted during the run")
        if row["version"] != ctx.wf.version:
            # Edits take effect at the next wave: waves in flight finish under the
            # definition they started with (docs/running.md).
            log.warning("workflow %s changed (version %s -> %s); reloading", ctx.wf.id,
                        ctx.wf.version, row["version"])
            wf_id = ctx.wf.id
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
