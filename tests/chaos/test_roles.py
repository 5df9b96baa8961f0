"""`interp db roles`: interp_ops reads and writes nothing; interp_worker runs a
workflow end to end and cannot change definitions.

Reproduce: INTERP_TEST_DSN=... .venv/bin/pytest -q tests/chaos/test_roles.py
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from interpreter.config import DatabaseChoice
from interpreter.db import Database
from interpreter.engine import Runner, RunOptions
from tests.chaos.common import all_invariants, record_figure
from tests.helpers import standard_pipeline

pytestmark = [pytest.mark.slow]

DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def logins(conn):
    """Two LOGIN users, unique per test (roles are cluster-wide); dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    users = {"worker": f"chaos_w_{tag}", "ops": f"chaos_o_{tag}"}
    yield users
    for u in users.values():
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (u,)).fetchone():
            conn.execute(f'DROP OWNED BY "{u}"')
            conn.execute(f'DROP ROLE "{u}"')


def as_user(dsn: str, user: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = user
    params.pop("password", None)
    return make_conninfo(**params)


def interp_tables(conn) -> list[str]:
    return [r["relname"] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'interp' AND c.relkind IN ('r', 'p') ORDER BY 1")]


def denied(c: psycopg.Connection, statement: str) -> bool:
    try:
        with c.transaction(force_rollback=True):
            c.execute(statement)
    except DENIED:
        return True
    return False


def test_roles_are_idempotent_and_ops_writes_nothing(cli, conn, dsn, logins):
    standard_pipeline(conn, wf=750, n=3)
    cli("db", "roles")
    cli("db", "roles", "--login", f"{logins['ops']}=ops", "--login",
        f"{logins['worker']}=worker")  # a second time, with logins: still fine
    printed = cli("db", "roles", "--print").stdout
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA interp" in printed
    # let ops see some rows first
    cli("run", "--workflow", "750", "--until-idle", "--poll", "0.05")
    tables = interp_tables(conn)
    assert {"checkpoints", "subject_state", "steps", "actors"} <= set(tables)
    tried = 0
    with psycopg.connect(as_user(dsn, logins["ops"]), autocommit=True,
                         row_factory=psycopg.rows.dict_row) as ops:
        assert ops.execute("SELECT count(*) AS n FROM interp.checkpoints").fetchone()["n"] == 9
        ops.execute("SELECT * FROM interp.step_progress").fetchall()
        ops.execute("SELECT * FROM interp.dead_letters").fetchall()
        for t in tables:
            col = ops.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                              "AND attnum > 0 AND NOT attisdropped ORDER BY attnum LIMIT 1",
                              (f"interp.{t}",)).fetchone()["attname"]
            for stmt in (f"INSERT INTO interp.{t} SELECT * FROM interp.{t} WHERE false",
                         f'UPDATE interp.{t} SET "{col}" = "{col}" WHERE false',
                         f"DELETE FROM interp.{t} WHERE false",
                         f"TRUNCATE interp.{t}"):
                assert denied(ops, stmt), f"ops could run: {stmt}"
                tried += 1
        assert denied(ops, "CREATE TABLE interp.ops_was_here (x int)")
        assert denied(ops, "UPDATE public.items SET title = 'x' WHERE false")
    record_figure("roles_ops_denied", statements=tried, tables=len(tables))


def test_worker_runs_a_workflow_and_cannot_alter_definitions(cli, conn, dsn, logins):
    standard_pipeline(conn, wf=751, n=60)
    cli("db", "roles", "--login", f"{logins['worker']}=worker")
    worker_dsn = as_user(dsn, logins["worker"])
    # the engine, connected as the worker
    db = Database(DatabaseChoice(worker_dsn, "test"), db_timeout=10)
    try:
        summary = Runner(db, 751, RunOptions(until_idle=True, poll_s=0.05, batch_size=20)).run()
    finally:
        db.close()
    assert summary.status == "finished" and summary.checkpoints == 180
    assert all_invariants(conn, 751, effect_step=3) == {}
    with psycopg.connect(worker_dsn, autocommit=True) as w:
        assert w.execute("SELECT current_user").fetchone()[0] == logins["worker"]
        for stmt in ("UPDATE interp.steps SET timeout_s = 1",
                     "INSERT INTO interp.actors (name, kind, target) VALUES "
                     "('evil', 'script', 'os:system')",
                     "UPDATE interp.actors SET target = 'os:system'",
                     "DELETE FROM interp.step_transitions",
                     "UPDATE interp.workflows SET paused = true",
                     "INSERT INTO interp.prompt_templates (name, body) VALUES ('x', 'y')",
                     "UPDATE interp.models SET source = '/tmp/evil.gguf'",
                     "DELETE FROM interp.checkpoints",
                     "TRUNCATE interp.subject_state",
                     "CREATE TABLE interp.worker_was_here (x int)",
                     "DROP TABLE public.items"):
            assert denied(w, stmt), f"worker could run: {stmt}"


def test_worker_runs_a_workflow_with_the_cli(cli, conn, dsn, logins):
    """`interp run` as the worker: the same, through the command line users run.

    Fails today: `interp run` migrates first, and the migrator's bookkeeping DDL
    (CREATE SCHEMA IF NOT EXISTS interp) needs CREATE on the database, which a
    least-privilege worker must not have (see the report in docs/security.md)."""
    standard_pipeline(conn, wf=752, n=30)
    cli("db", "roles", "--grant-domain", "public.items,public.effects", "--login",
        f"{logins['worker']}=worker")
    from tests.conftest import Cli

    worker_cli = Cli(as_user(dsn, logins["worker"]))
    r = worker_cli("run", "--workflow", "752", "--until-idle", "--poll", "0.05", check=False)
    assert r.returncode == 0, r.stderr
    assert all_invariants(conn, 752, effect_step=3) == {}
