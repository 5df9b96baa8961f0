"""What a wave is, and the guard an author's statement runs under.

- `Wave`: a leased wave (claimed in one transaction, committed in another);
  `InlineWave`: a wave locked by the transaction that commits it;
- `actor_statement`: an author's statement (a gate, a SQL actor) in a
  savepoint bounded by its step's timeout_s, a transient error redoing the wave;
- `is_transient`, `is_connection_error`, `is_refusal`: how a database error is
  read (try again, reconnect, or blame what one subject's row holds).

The wave store (wave_store) moves the rows; the lanes and the actor kinds get
their waves as these types.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from .actor_api import StepResult, Subject
from .db import one
from .definitions import StepDef, Workflow
from .errors import StatementFailed, StatementTimedOut, TransientWaveError, first_line
from .queries import Q
from .wave_rules import Claimed

# SQLSTATE classes of errors about the connection or the server's state, not
# about what a statement wrote: connection, transaction rollback, resources,
# prerequisite state (lock timeouts), operator intervention (cancel, shutdown),
# system and internal errors.
_NOT_ABOUT_THE_DATA = ("08", "40", "53", "55", "57", "58", "XX")
_TRANSIENT = ("40", "55P03", "57014")
_CONNECTION = ("08", "57P01", "57P02", "57P03")


@dataclass
class Wave:
    """A leased wave: claimed in one transaction, committed in another."""

    step: StepDef
    wave_id: int
    claimed: dict[str, Claimed]
    subjects: list[Subject]
    wf: Workflow                # the definition it was claimed under, and commits under
    model: str | None = None
    claimed_at: float = field(default_factory=time.monotonic)


@dataclass
class InlineWave:
    """A wave locked by the transaction that will commit it: the row locks are its lease."""

    step: StepDef
    workflow_id: int
    wave_id: int
    claimed: dict[str, Claimed]
    outputs: dict[str, dict[str, Any]]   # earlier steps' outputs (empty for a gate)
    started: datetime
    wf: Workflow                # the definition it runs and commits under
    # The last of its transient retries: a transient error now fails the wave.
    last_try: bool = False
    t0: float = field(default_factory=time.monotonic)

    @property
    def ids(self) -> list[str]:
        return list(self.claimed)

    def params(self, ids: list[str] | None = None) -> dict[str, Any]:
        """The parameters a gate or SQL actor statement is given for this wave (or
        for some of its subjects)."""
        return {"ids": self.ids if ids is None else ids, "workflow_id": self.workflow_id,
                "step": self.step.number}


# Computes an inline wave's results inside its transaction (a gate, a SQL actor,
# a quick script).
InlineWork = Callable[[psycopg.Connection[Any], InlineWave], list[StepResult]]


def is_transient(exc: BaseException) -> bool:
    """A deadlock, a serialization failure, a lock timeout or a cancel: trying the
    same work again may well succeed."""
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith(_TRANSIENT)


def is_connection_error(exc: BaseException) -> bool:
    """The connection or the server went away (db.run reconnects and redoes it)."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(_CONNECTION)


def is_refusal(exc: BaseException) -> bool:
    """Whether a write failed for what it held (bad data, a constraint, a program
    limit), so that writing the same rows apart can find the one to blame; not for
    the state of the connection or the server."""
    if isinstance(exc, ValueError | RecursionError):
        return True  # psycopg could not encode a value (a lone surrogate...)
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate is None:  # refused by psycopg before it reached the server
        return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError)
    return not exc.sqlstate.startswith(_NOT_ABOUT_THE_DATA)


@contextmanager
def actor_statement(c: psycopg.Connection[Any], wave: InlineWave, what: str) -> Iterator[None]:
    """Runs an author's statement (a gate, a SQL actor) for a wave: in a savepoint,
    so a failure leaves the wave's transaction usable, and with statement_timeout
    set to the step's timeout_s for that statement alone.

    Raises TransientWaveError for a transient error (StatementFailed on the
    wave's last try), StatementTimedOut when the timeout fired, and
    StatementFailed for any other error of the statement; connection errors
    pass through (db.run reconnects). An exception of the caller's own rolls
    the savepoint back and passes through too."""
    timeout_s = wave.step.timeout_s
    t0 = time.monotonic()
    try:
        with c.transaction():
            old = one(c.execute(Q["bound_statement"], {
                "ms": str(max(1, round(timeout_s * 1000)))}))["old"]
            yield
            c.execute(Q["unbound_statement"], {"old": old})
    except psycopg.Error as exc:
        if is_connection_error(exc):
            raise
        # A cancel after the step's timeout is the timeout (the SQLSTATE is the
        # same); a shorter one came from elsewhere and counts as transient.
        if isinstance(exc, psycopg.errors.QueryCanceled) and \
                time.monotonic() - t0 >= timeout_s:
            raise StatementTimedOut(f"{what} timed out after {timeout_s:g}s") from exc
        if is_transient(exc) and not wave.last_try:
            raise TransientWaveError(f"{what}: {first_line(exc)}") from exc
        raise StatementFailed(f"{what} failed: {first_line(exc)}",
                              transient=is_transient(exc)) from exc


def gate_body(gate_sql: str) -> str:
    """A gate's SQL as the body of a CTE: without the trailing semicolons that
    end a statement but cannot end a subquery."""
    return gate_sql.strip().rstrip(";").rstrip()
