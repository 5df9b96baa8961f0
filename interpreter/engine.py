"""The run loop: admit, pick a wave, run it, commit it, repeat.

`Runner` composes the rooms of a run and starts them:

- the wave store (wave_store): the only code that touches the work queue and
  the checkpoints: admit, claim, commit, release, fence, reap;
- the breaker (breaker): per-actor circuit breakers, in interp.actor_health;
- the run's lifecycle (run_lifecycle): the run's record, its heartbeat, and
  the periodic look at pause, definition edits, breakers and expired leases;
- the utilisation recorder (utilisation): the run's timeline (hardware samples,
  the model lane's intervals), started and stopped with the run;
- admission (admission): a small thread that admits new subjects every
  --admit-every seconds, backlog or not, one worker per workflow at a time;
- two lanes, peers that both go through the wave store: the cheap lane
  (cheap_lane; main thread: gates, SQL and script actors) and the model lane
  (model_lane; one thread, which alone owns the resident models; it lets go of
  the database while it generates and commits on its own DB thread while it
  goes on with the next, prefetched, wave).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from .admission import Admitter
from .breaker import Breaker
from .cheap_lane import CheapLane
from .db import Database
from .definitions import Workflow, load_workflow
from .errors import DatabaseUnreachable, first_line
from .model_lane import ModelLane
from .run_context import RunContext, RunOptions, RunSummary
from .run_lifecycle import RunLifecycle
from .utilisation import start_recording
from .wave_store import WaveStore
from .waves import Wave

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Runner:
    """One worker on one workflow: `Runner(db, wf_id, RunOptions(...)).run()`."""

    def __init__(self, db: Database, workflow_id: int, options: RunOptions | None = None,
                 stop: threading.Event | None = None):
        opt = options or RunOptions()
        wf = db.run(lambda c: load_workflow(c, workflow_id))
        self.ctx = RunContext(db, wf, opt, opt.worker_id or default_worker_id(),
                              stop or threading.Event())
        self.breaker = Breaker(self.ctx)
        self.store = WaveStore(self.ctx, self.breaker)
        self.lifecycle = RunLifecycle(self.ctx, self.store, self.breaker)
        self.cheap_lane = CheapLane(self.ctx, self.store, self.breaker, self.lifecycle)
        self.model_lane = ModelLane(self.ctx, self.store, self.breaker)
        self.admitter = Admitter(self.ctx, self.store)

    # What callers (the CLI, the tests) read from a runner: its context's doors, in one place.

    @property
    def wf(self) -> Workflow:
        return self.ctx.wf

    @property
    def worker_id(self) -> str:
        return self.ctx.worker_id

    @property
    def stop(self) -> threading.Event:
        return self.ctx.stop

    @property
    def run_id(self) -> int | None:
        return self.ctx.run_id

    @run_id.setter
    def run_id(self, value: int | None) -> None:
        self.ctx.run_id = value

    @property
    def summary(self) -> RunSummary | None:
        return self.ctx.summary

    def validate(self) -> None:
        self.lifecycle.validate()

    def admit(self, limit: int | None) -> int:
        return self.store.admit(limit)

    def release_all(self, timeout_s: float = 2.0) -> int | None:
        """For a process about to exit without finishing its waves (a second Ctrl-C):
        gives back this worker's leased waves, uncounted, and records the run as
        stopped, within about timeout_s. Returns the subjects released, or None when
        the database did not answer in time (the leases then expire as after a crash).
        A wave in flight is not waited for: a result it commits later is fenced out."""
        if self.ctx.run_id is None:
            return 0
        return self.lifecycle.release_now(timeout_s)

    # ------------------------------------------------------------ the run

    def run(self) -> RunSummary:
        ctx = self.ctx
        if ctx.opt.validate:
            self.lifecycle.validate()
        ctx.run_id = self.lifecycle.start_run()
        summary = ctx.summary = RunSummary(ctx.run_id, ctx.worker_id)
        status, error = "finished", None
        lost_db = False
        self.lifecycle.start_heartbeat()
        recorder = start_recording(ctx)
        model_thread = None
        try:
            summary.admitted = self.store.admit(ctx.opt.limit)
            self.admitter.start()
            if any(ctx.wf.is_model_step(s) for s in ctx.wf.steps.values()):
                model_thread = threading.Thread(target=self.model_lane.main, name="model-lane",
                                                daemon=True)
                model_thread.start()
            self.cheap_lane.run()
            if ctx.stop.is_set():
                status = "stopped"
        except BaseException as exc:
            status, error = "failed", first_line(exc)
            lost_db = isinstance(exc, DatabaseUnreachable)
            ctx.stop.set()
            raise
        finally:
            ctx.stop.set()
            if model_thread is not None:
                model_thread.join()
            lost_db = lost_db or isinstance(ctx.model_error, DatabaseUnreachable)
            # An admission in flight finishes its transaction (it is short), unless
            # the database is gone: then it is a daemon thread like the heartbeat.
            self.admitter.stop(timeout=0.5 if lost_db else 5.0)
            # Without a database the heartbeat and the utilisation recorder can only wait for it
            # (a connection attempt lasts --db-timeout): do not wait for them, they
            # are daemon threads, and --db-timeout is the limit the user set.
            self.lifecycle.end_heartbeat(timeout=0.5 if lost_db else 5.0)
            if recorder is not None:   # after writing the lane's last intervals
                recorder.stop(timeout=0.5 if lost_db else 5.0, write_last=not lost_db)
            if ctx.model_error is not None and status == "finished":
                status, error = "failed", first_line(ctx.model_error)
            if self.admitter.error is not None and status != "failed":
                status, error = "failed", first_line(self.admitter.error)
            summary.status = status
            if not lost_db:  # else the database is why we stop: do not wait for it again
                self.lifecycle.finish_run(status, error)
        if ctx.model_error is not None:
            raise ctx.model_error
        if self.admitter.error is not None:
            raise self.admitter.error
        return summary


__all__ = ["Runner", "RunOptions", "RunSummary", "Wave"]
