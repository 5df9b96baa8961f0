"""The admission thread's answers to errors, without a database: a lost database or
a transient error costs one turn; a broken entry point stops the run; --limit ends
the thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from interpreter.admission import Admitter
from interpreter.errors import DatabaseUnreachable, DefinitionError
from interpreter.run_context import RunContext, RunOptions, RunSummary


class Store:
    """try_admit answers from a script: an exception to raise, or a count."""

    def __init__(self, answers: list[Any]):
        self.answers = answers
        self.calls = 0

    def try_admit(self, limit: int | None) -> int | None:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, BaseException):
            raise answer
        return answer


def context(**options: Any) -> RunContext:
    ctx = RunContext(None, None, RunOptions(poll_s=0.01, **options),  # type: ignore[arg-type]
                     "w", threading.Event())
    ctx.summary = RunSummary(1, "w")
    return ctx


def run_until(admitter: Admitter, done, timeout: float = 5.0) -> None:
    admitter.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    admitter.ctx.stop.set()
    admitter.stop()


def transient() -> DefinitionError:
    err = DefinitionError("entry point 'all' of workflow 1 failed: deadlock detected")
    err.__cause__ = psycopg.errors.DeadlockDetected("deadlock detected")
    return err


def test_a_lost_database_or_a_transient_error_costs_one_turn():
    ctx = context()
    store = Store([DatabaseUnreachable("lost PostgreSQL"), transient(), 3, None, 2])
    admitter = Admitter(ctx, store)  # type: ignore[arg-type]
    run_until(admitter, lambda: store.calls >= 5)
    assert admitter.error is None
    assert ctx.summary is not None and ctx.summary.admitted == 5
    assert admitter.skips == 1   # the None: another worker held the lock


def test_a_broken_entry_point_stops_the_run():
    ctx = context()
    broken = DefinitionError("entry point 'all' of workflow 1 failed: no such column")
    broken.__cause__ = psycopg.errors.UndefinedColumn("no such column")
    admitter = Admitter(ctx, Store([broken]))  # type: ignore[arg-type]
    admitter.start()
    assert ctx.stop.wait(5)
    admitter.stop()
    assert admitter.error is broken


def test_the_thread_ends_once_limit_is_admitted():
    ctx = context(limit=4)
    store = Store([3, 1, 5, 5])
    admitter = Admitter(ctx, store)  # type: ignore[arg-type]
    admitter.start()
    deadline = time.monotonic() + 5
    while admitter.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not admitter.alive
    assert store.calls == 2 and ctx.summary is not None and ctx.summary.admitted == 4
    ctx.stop.set()


def test_admit_every_defaults_to_poll():
    assert Admitter(context(), Store([])).every_s == 0.01  # type: ignore[arg-type]
    assert Admitter(context(admit_every_s=5.0), Store([])).every_s == 5.0  # type: ignore[arg-type]
