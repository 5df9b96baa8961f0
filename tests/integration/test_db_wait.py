"""Database.run against a server that answers: it never gives up while the
server answers, and dead pooled connections are replaced at once. (Real
outages, with a server the test crashes: tests/chaos/test_db_restart.py.)"""

from __future__ import annotations

import threading
import time

import psycopg

from interpreter.config import DatabaseChoice
from interpreter.db import Database


def test_a_busy_pool_is_not_an_outage(dsn):
    """Waiting longer than db_timeout for a pooled connection while the server
    answers is not losing the database (before: exit 2 after db_timeout)."""
    db = Database(DatabaseChoice(dsn, "test"), max_size=1, db_timeout=1)
    try:
        held = threading.Event()

        def hold() -> None:
            with db.pool.connection() as conn:
                held.set()
                time.sleep(3.5)  # longer than db_timeout and than one pool wait (2 s)
                conn.execute("SELECT 1")

        t = threading.Thread(target=hold)
        t.start()
        held.wait(5)
        t0 = time.monotonic()
        assert db.run(lambda c: c.execute("SELECT 42 AS x").fetchone()["x"]) == 42
        waited = time.monotonic() - t0
        t.join()
        assert waited >= 2.0  # it did wait for the connection, past db_timeout
    finally:
        db.close()


def test_dead_pooled_connections_are_replaced_at_once(dsn):
    """Every pooled backend terminated (as by pg_terminate_backend or a restart):
    the next transaction gets a fresh connection without waiting, even one that
    must not retry (the heartbeat's)."""
    db = Database(DatabaseChoice(dsn, "test"), max_size=3, db_timeout=10,
                  application_name="interp-wait-test")
    try:
        # three connections in the pool
        conns = [db.pool.getconn() for _ in range(3)]
        for c in conns:
            db.pool.putconn(c)
        with psycopg.connect(dsn, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'interp-wait-test'").fetchone()[0]
        assert cut == 3
        time.sleep(0.2)
        t0 = time.monotonic()
        assert db.run(lambda c: c.execute("SELECT 1 AS x").fetchone()["x"], retry=False) == 1
        assert db.run(lambda c: c.execute("SELECT 2 AS x").fetchone()["x"]) == 2
        assert time.monotonic() - t0 < 1.0
        # The same for a caller that takes a pooled connection itself (a metrics scrape).
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'interp-wait-test'").fetchone()[0] >= 1
        time.sleep(0.2)
        with db.connection(timeout=1.0) as conn:
            assert conn.execute("SELECT 3 AS x").fetchone()["x"] == 3
    finally:
        db.close()
