"""What Database.run takes for a lost connection (wait for the server, for
--db-timeout without an answer) and what for a statement's error."""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from interpreter.db import is_connection_problem, user_connect_timeout


def test_lost_connections_and_empty_pools_are_connection_problems():
    assert is_connection_problem(psycopg.OperationalError("server closed the connection"))
    assert is_connection_problem(PoolTimeout("couldn't get a connection after 2.00 sec"))
    assert is_connection_problem(psycopg.errors.AdminShutdown())
    assert is_connection_problem(psycopg.errors.CannotConnectNow())


def test_a_statement_error_is_not_a_connection_problem():
    assert not is_connection_problem(psycopg.errors.QueryCanceled())
    assert not is_connection_problem(psycopg.errors.LockNotAvailable())
    assert not is_connection_problem(psycopg.errors.DeadlockDetected())
    assert not is_connection_problem(ValueError("not a database error"))


def test_a_connect_timeout_of_the_users_is_kept(monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert not user_connect_timeout("postgresql://u@h/db")
    assert user_connect_timeout("postgresql://u@h/db?connect_timeout=20")
    assert user_connect_timeout("host=h connect_timeout=20")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "15")
    assert user_connect_timeout("postgresql://u@h/db")
