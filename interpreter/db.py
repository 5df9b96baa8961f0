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
from psycopg_pool import ConnectionPool

from .config import DatabaseChoice
from .errors import DatabaseUnreachable, first_line

log = logging.getLogger(__name__)
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


class Database:
    """One pool per process. ``db_timeout`` bounds how long we keep retrying."""

    def __init__(self, choice: DatabaseChoice, *, max_size: int = 4,
                 db_timeout: float = DEFAULT_DB_TIMEOUT_S,
                 application_name: str = "interp"):
        self.choice = choice
        self.dsn = choice.dsn
        self.target = describe_target(choice.dsn)
        self.db_timeout = db_timeout
        self.pool = ConnectionPool(
            choice.dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"application_name": application_name, "row_factory": dict_row},
            # A dead connection (server restarted) is noticed and replaced.
            check=ConnectionPool.check_connection,
            reconnect_timeout=db_timeout,
        )
        self._open()

    def _open(self) -> None:
        try:
            # Check once with a plain connection: the pool itself would retry
            # silently in the background, and a user with a typo in the DSN
            # deserves an answer now.
            with psycopg.connect(self.dsn, connect_timeout=5):
                pass
        except psycopg.OperationalError as exc:
            raise DatabaseUnreachable(
                f"cannot connect to PostgreSQL at {self.target}: {first_line(exc)}") from exc
        self.pool.open(wait=True, timeout=30)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection(timeout=self.db_timeout) as conn:
            yield conn

    def run(self, fn: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True) -> T:
        """Run fn(conn) in one transaction; on a lost connection, back off and retry.

        fn must be safe to repeat: it runs in a transaction, so a failed try
        leaves nothing behind.
        """
        deadline = time.monotonic() + self.db_timeout
        delay = 0.1
        while True:
            try:
                with self.pool.connection(timeout=max(1.0, deadline - time.monotonic())) as conn:
                    with conn.transaction():
                        return fn(conn)
            except (psycopg.OperationalError, psycopg.errors.AdminShutdown,
                    psycopg_pool_timeout()) as exc:
                if not retry or time.monotonic() >= deadline:
                    raise DatabaseUnreachable(
                        f"lost PostgreSQL at {self.target} for more than {self.db_timeout:.0f}s: "
                        f"{first_line(exc)}") from exc
                log.warning("database unavailable (%s); retrying in %.1fs", first_line(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def one(cursor: psycopg.Cursor[Any]) -> dict[str, Any]:
    """The single row a query must return (INSERT ... RETURNING, an aggregate)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query returned no row")
    return row


def psycopg_pool_timeout() -> type[Exception]:
    from psycopg_pool import PoolTimeout

    return PoolTimeout




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
