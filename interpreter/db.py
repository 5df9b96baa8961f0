"""The connector: a psycopg pool opened once per process, and retry with backoff.

Everything else (the manager functions) takes a connection from here and keeps
it only for the length of one short transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from .config import DatabaseChoice
from .errors import DatabaseUnreachable, InternalError, first_line

log = logging.getLogger(__name__)
# The pool's own lines about each failed connection attempt repeat what run()
# says once per outage ("database unavailable ...", "database back after ...").
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
T = TypeVar("T")


def describe_target(dsn: str) -> str:
    """host:port/dbname for messages, without the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    import os

    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or ""
    where = f"socket {host} (port {port})" if str(host).startswith("/") else f"{host}:{port}"
    return f"{where}/{db}" if db else where


# How long a worker keeps retrying an unreachable database before it exits 2.
DEFAULT_DB_TIMEOUT_S = 60.0
# The longest one request waits for a pooled connection before the worker looks
# at the server itself (a fresh connection, outside the pool).
POOL_WAIT_S = 2.0
POOL_CLOSE_S = 1.0
# While the server does not answer, the worker tries a fresh connection after
# 0.1 s, then doubling up to this: it is back within about this long of the
# server answering again.
PROBE_CAP_S = 1.0
PROBE_FIRST_S = 0.1
# A connection attempt (a probe, or the pool's) gives up after this many seconds
# (a host that drops packets), unless the user set connect_timeout.
PROBE_CONNECT_TIMEOUT_S = 3
# The pool's own reconnection gives up after this (two tries). Its backoff
# (1, 3, 7, 15, 31 s...) must not decide when a worker is back: run() probes the
# server on its own schedule and asks the pool for fresh connections once the
# server answers.
POOL_RECONNECT_S = 0.5
# SQLSTATEs of a lost connection or a server that is going away or not yet up.
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")


def user_connect_timeout(dsn: str) -> bool:
    """Whether the user set a connect_timeout (in the DSN, or PGCONNECT_TIMEOUT)."""
    import os

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        parts = {}
    return bool(parts.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT"))


class _Stale(InternalError):
    """A pooled connection failed its check before any work was done on it."""


def is_connection_problem(exc: BaseException) -> bool:
    """Whether exc says the connection or the server went away (or the pool has no
    connection to give), as opposed to what a statement did."""
    if isinstance(exc, _Stale | PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith(_CONNECTION_STATES)


class Database:
    """One pool per process. ``db_timeout`` bounds how long we keep retrying while
    the server does not answer."""

    def __init__(self, choice: DatabaseChoice, *, max_size: int = 4,
                 db_timeout: float = DEFAULT_DB_TIMEOUT_S,
                 application_name: str = "interp"):
        self.choice = choice
        self.dsn = choice.dsn
        self.target = describe_target(choice.dsn)
        self.db_timeout = db_timeout
        self.application_name = application_name
        # A connect_timeout of the user's (in the DSN or PGCONNECT_TIMEOUT) is kept.
        self.connect_kwargs: dict[str, Any] = (
            {} if user_connect_timeout(choice.dsn)
            else {"connect_timeout": PROBE_CONNECT_TIMEOUT_S})
        self.pool = ConnectionPool(
            choice.dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"application_name": application_name, "row_factory": dict_row,
                    **self.connect_kwargs},
            # No check callback: run() checks each connection itself, so that a dead
            # one (server restarted) is replaced at once, not after the pool's
            # 1-second backoff per dead connection.
            reconnect_timeout=POOL_RECONNECT_S,
        )
        self._open()

    def _open(self) -> None:
        # Check once with a plain connection: the pool itself would retry silently
        # in the background, and a user with a typo in the DSN deserves an answer now.
        problem = self.probe(first=True)
        if problem is not None:
            raise DatabaseUnreachable(
                f"cannot connect to PostgreSQL at {self.target}: {first_line(problem)}"
            ) from problem
        self.pool.open(wait=True, timeout=30)

    def close(self) -> None:
        # After an outage the pool's workers may be inside a connect attempt; the
        # process is leaving, and --db-timeout is the limit the user set: wait for
        # them a second, not psycopg_pool's default five.
        self.pool.close(timeout=POOL_CLOSE_S)

    def probe(self, *, first: bool = False) -> Exception | None:
        """Whether the server answers a fresh connection (outside the pool): None if
        it does, else why not."""
        kwargs: dict[str, Any] = ({"connect_timeout": 5} if first and self.connect_kwargs
                                  else self.connect_kwargs)
        try:
            with psycopg.connect(self.dsn, application_name=f"{self.application_name} probe",
                                 **kwargs):
                return None
        except psycopg.Error as exc:
            return exc

    @contextmanager
    def connection(self, timeout: float = POOL_WAIT_S) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that answers, for a caller that runs its own
        transactions and does not retry (a metrics scrape): a dead one (the server
        restarted) is replaced at once. Raises PoolTimeout after timeout."""
        conn = self._answering(timeout)
        try:
            yield conn
        finally:
            self.pool.putconn(conn)

    def _answering(self, timeout: float) -> psycopg.Connection[Any]:
        for _ in range(self.pool.max_size + 1):
            conn = self.pool.getconn(timeout)
            try:
                ConnectionPool.check_connection(conn)
                return conn
            except psycopg.Error:
                self.pool.putconn(conn)   # closed, and replaced by the pool
                self._sweep()
        return self.pool.getconn(timeout)

    def run(self, fn: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True,
            in_doubt: Callable[[psycopg.Connection[Any]], T | None] | None = None) -> T:
        """Run fn(conn) in one transaction; on a lost connection, wait for the server
        and retry.

        fn must be safe to repeat: it runs in a transaction, so a failed try
        leaves nothing behind. When the connection breaks during COMMIT, the try
        may have committed all the same (its reply was lost): then, before fn is
        run again, in_doubt(conn) is asked in a transaction of its own. It returns
        what that try committed (fn's result then), or None to run fn again.

        While the server does not answer a fresh connection, run() tries one after
        0.1 s, doubling up to PROBE_CAP_S; it gives up (DatabaseUnreachable) only
        once the server has not answered for db_timeout. Other operational errors
        (a timeout, a deadlock) are retried with backoff for db_timeout. With
        retry=False, a connection problem raises at once (a dead pooled connection
        found before fn ran is still replaced).
        """
        started = time.monotonic()
        delay = 0.1
        failures = 0
        since: float | None = None    # the first failure since the server last answered
        doubt = False
        while True:
            committing = False
            # A try that fails found the server gone at the latest when it began: the
            # wait for a pooled connection (up to POOL_WAIT_S) is time without a
            # database, so --db-timeout counts it.
            tried_at = time.monotonic()
            try:
                with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                    try:
                        ConnectionPool.check_connection(conn)
                    except psycopg.Error as exc:
                        raise _Stale(first_line(exc)) from exc
                    if doubt and in_doubt is not None:
                        with conn.transaction():
                            done = in_doubt(conn)
                        if done is not None:
                            log.warning("a commit whose reply was lost had reached the "
                                        "database: not redone")
                            return done
                    doubt = False
                    with conn.transaction():
                        result = fn(conn)
                        committing = True
                    return result
            except (_Stale, psycopg.OperationalError, PoolTimeout) as exc:
                doubt = doubt or committing
                if not is_connection_problem(exc):
                    # The server answered with an error about the statement's state (a
                    # lock or statement timeout, a deadlock): back off, for db_timeout.
                    if not retry:
                        raise DatabaseUnreachable(
                            f"lost PostgreSQL at {self.target}: {first_line(exc)}") from exc
                    if time.monotonic() - started >= self.db_timeout:
                        raise DatabaseUnreachable(self._lost(exc)) from exc
                    log.warning("database unavailable (%s); retrying in %.1fs",
                                first_line(exc), delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                failures += 1
                if not retry:
                    # A dead pooled connection found before fn ran is replaced (a
                    # restart leaves every idle one dead); anything else raises.
                    if isinstance(exc, _Stale) and failures <= self.pool.max_size + 1:
                        self._sweep()
                        continue
                    raise DatabaseUnreachable(
                        f"lost PostgreSQL at {self.target}: {first_line(exc)}") from exc
                if since is None:
                    since = tried_at
                if failures > 2:
                    # The server answers yet our transactions keep losing their
                    # connection: do not spin.
                    time.sleep(min(PROBE_FIRST_S * 2 ** (failures - 3), PROBE_CAP_S))
                self._wait_for_server(since, exc)
                since = None
                self._sweep()

    def _wait_for_server(self, since: float, cause: BaseException | None = None) -> None:
        """Returns as soon as the server answers a fresh connection; raises
        DatabaseUnreachable once it has not answered for db_timeout since `since`
        (the first failure). Tries after 0.1 s, doubling up to PROBE_CAP_S."""
        delay = PROBE_FIRST_S
        warned = False
        while True:
            problem = self.probe()
            if problem is None:
                if warned:
                    log.warning("database back after %.1fs", time.monotonic() - since)
                return
            waited = time.monotonic() - since
            if waited >= self.db_timeout:
                raise DatabaseUnreachable(self._lost(problem)) from (cause or problem)
            if not warned:
                log.warning("database unavailable (%s); retrying in %.1fs, then every "
                            "%.1fs at most, for up to %.0fs", first_line(cause or problem),
                            delay, PROBE_CAP_S, self.db_timeout)
                warned = True
            time.sleep(min(delay, self.db_timeout - waited))
            delay = min(delay * 2, PROBE_CAP_S)

    def _sweep(self) -> None:
        """Drops the pool's dead idle connections and lets it open fresh ones now."""
        try:
            self.pool.check()
        except PoolClosed:
            pass

    def _lost(self, exc: BaseException) -> str:
        return (f"lost PostgreSQL at {self.target} for more than {self.db_timeout:.0f}s: "
                f"{first_line(exc)}")


def one(cursor: psycopg.Cursor[Any]) -> dict[str, Any]:
    """The single row a query must return (INSERT ... RETURNING, an aggregate)."""
    row = cursor.fetchone()
    if row is None:
        raise InternalError("the query returned no row")
    return row


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row ready for JSON: timestamps as ISO 8601 text, intervals in seconds,
    numerics as floats (what `--json` outputs and the dashboard's API show)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, dt.datetime):
            v = v.isoformat()
        elif isinstance(v, dt.timedelta):
            v = v.total_seconds()
        elif hasattr(v, "as_integer_ratio") and not isinstance(v, int | float):  # Decimal
            v = float(v)
        out[k] = v
    return out
