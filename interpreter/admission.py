"""Admission on its own schedule: a small thread that runs the entry points'
admitting statements every `--admit-every` seconds (default: `--poll`),
whatever the lanes are doing.

Admission does not wait for the lanes to run out of work: rows inserted during
a backlog are admitted at the next tick, and a new urgent row can overtake the
backlog. It is a thread of its own, beside the heartbeat:

- it never delays a lane: it holds a pooled connection only for the length of
  one admission transaction, never across a wave or a generation;
- one worker admits a workflow at a time: each tick takes the workflow's
  advisory lock with pg_try_advisory_xact_lock (sql/admission.sql) in the
  admission's own transaction; a worker that finds it taken, or the workflow
  paused, skips that tick (counted in `skips`) instead of waiting;
- each entry point is one set-based statement (`INSERT ... SELECT ... ON
  CONFLICT DO NOTHING`), and the subjects it inserts record the run that
  admitted them (interp.subject_state.admitted_by_run);
- `--limit N` caps everything a run admits, its start and its ticks together:
  once N are admitted, the thread ends.

A transient error (a deadlock, a lock timeout, a cancel) or a lost database
costs one tick: like the heartbeat, admission never decides that the database
is gone (the lanes do, after --db-timeout). Any other error of an entry point
stops the run with that error, as an admission at the start of the run would
(the engine raises `error` once the lanes end).
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import DatabaseUnreachable, DefinitionError, first_line
from .run_context import RunContext
from .wave_store import WaveStore
from .waves import is_transient

log = logging.getLogger(__name__)


class Admitter:
    def __init__(self, ctx: RunContext, store: WaveStore):
        self.ctx = ctx
        self.store = store
        self.ticks = 0        # admission passes tried
        self.skips = 0        # ... of which another worker held the lock (or paused)
        self.error: BaseException | None = None
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_db = False

    @property
    def every_s(self) -> float:
        opt = self.ctx.opt
        return opt.admit_every_s if opt.admit_every_s is not None else opt.poll_s

    @property
    def alive(self) -> bool:
        """Whether the thread still runs (it ends with the run, or once --limit is met)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._ended.clear()
        self._thread = threading.Thread(target=self._loop, name="admission", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the thread (a tick in progress finishes its transaction first)."""
        self._ended.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        ctx = self.ctx
        next_tick = time.monotonic() + self.every_s
        while True:
            wait = next_tick - time.monotonic()
            if wait > 0 and (ctx.stop.wait(wait) or self._ended.is_set()):
                return
            if ctx.stop.is_set() or self._ended.is_set():
                return
            next_tick = time.monotonic() + self.every_s
            left = ctx.admission_left()
            if left == 0:
                log.info("--limit reached: this run admits no more subjects")
                return
            try:
                self.tick(left)
            except DatabaseUnreachable as exc:
                # Once per outage, not once a tick.
                (log.debug if self._lost_db else log.warning)(
                    "admission skipped: %s", first_line(exc))
                self._lost_db = True
                continue
            except DefinitionError as exc:
                if exc.__cause__ is not None and is_transient(exc.__cause__):
                    log.warning("admission skipped: %s", first_line(exc))
                    continue
                self._fail(exc)
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the engine
                self._fail(exc)
                return

    def tick(self, limit: int | None) -> int | None:
        """One admission pass, unless another worker is admitting (None: skipped)."""
        self.ticks += 1
        n = self.store.try_admit(limit)
        self._lost_db = False
        if n is None:
            self.skips += 1
            return None
        self.ctx.count_admitted(n)
        return n

    def _fail(self, exc: BaseException) -> None:
        log.error("admission failed: %s", first_line(exc))
        self.error = exc
        self.ctx.stop.set()
