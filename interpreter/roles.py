"""Least-privilege roles: `interp_worker` runs workflows, `interp_ops` reads.

Both are NOLOGIN group roles; people and services log in as their own users
made members of one of them (`interp db roles --login NAME=worker`). Every
statement is idempotent, so running it again after a migration (new tables)
or with more domain tables is safe. docs/security.md explains each grant.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from .errors import InterpError

WORKER = "interp_worker"
OPS = "interp_ops"
KINDS = {"worker": WORKER, "ops": OPS}

# Written by workflow authors; a worker only reads them.
DEFINITION_TABLES = ("workflows", "steps", "step_transitions", "entry_points", "actors",
                     "models", "prompt_templates")
# Written by the engine while it runs.
RUNTIME_TABLES = ("subject_state", "checkpoints", "waves", "runs", "actor_health",
                  "model_events")
# Kept up to date by triggers on the runtime tables (schema/0002); a trigger runs
# with the privileges of the worker that fired it.
ROLLUP_TABLES = ("checkpoint_totals", "checkpoint_minutes", "subject_counts")
# A worker records the sha256 and size of a model file it loaded (nothing else).
MODEL_FILE_COLUMNS = ("sha256", "size_bytes", "updated_at")


def _create_role(name: str, login: bool = False) -> sql.Composed:
    # CREATE ROLE has no IF NOT EXISTS; two sessions may race, so catch the duplicate.
    return sql.SQL(
        "DO $do$ BEGIN\n"
        "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) THEN\n"
        "    CREATE ROLE {ident} {login};\n"
        "  END IF;\n"
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;\n"
        "END $do$").format(lit=sql.Literal(name), ident=sql.Identifier(name),
                           login=sql.SQL("LOGIN" if login else "NOLOGIN"))


def _table(name: str) -> sql.Identifier:
    schema, _, table = name.rpartition(".")
    return sql.Identifier(schema or "public", table)


def existing_tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                        "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN "
                        "('r', 'p')", (schema,)).fetchall()
    return {r["relname"] if isinstance(r, dict) else r[0] for r in rows}


def role_statements(conn: psycopg.Connection[Any], *, domain: list[str] | None = None,
                    domain_schema: str = "public",
                    logins: list[tuple[str, str]] | None = None,
                    password: str | None = None) -> list[sql.Composed]:
    """The statements that create and grant both roles.

    domain: tables ("schema.table") the worker's SQL actors read and write; None
    means every table in domain_schema (and its sequences); [] means none.
    logins: (user, "worker"|"ops") pairs to create as LOGIN members."""
    interp = existing_tables(conn, "interp")
    if "checkpoints" not in interp:
        raise InterpError("the interp schema is not migrated; run `interp db migrate` first")
    w, o = sql.Identifier(WORKER), sql.Identifier(OPS)
    s: list[sql.Composed] = [_create_role(WORKER), _create_role(OPS)]
    # Both read everything in interp (tables, views, rollups); functions are
    # EXECUTE-able by PUBLIC and run with the caller's rights.
    s.append(sql.SQL("GRANT USAGE ON SCHEMA interp TO {}, {}").format(w, o))
    s.append(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA interp TO {}, {}").format(w, o))
    s.append(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA interp GRANT SELECT ON TABLES "
                     "TO {}, {}").format(w, o))
    # Ops writes nothing: take back anything granted before (e.g. by hand).
    s.append(sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL "
                     "TABLES IN SCHEMA interp FROM {}").format(o))
    s.append(sql.SQL("REVOKE CREATE ON SCHEMA interp FROM {}, {}").format(w, o))
    # The worker: definitions read-only, runtime tables insert/update, no DELETE.
    s.append(sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
        sql.SQL(", ").join(_table(f"interp.{t}") for t in DEFINITION_TABLES if t in interp), w))
    runtime = [t for t in RUNTIME_TABLES + ROLLUP_TABLES if t in interp]
    s.append(sql.SQL("GRANT INSERT, UPDATE ON {} TO {}").format(
        sql.SQL(", ").join(_table(f"interp.{t}") for t in runtime), w))
    s.append(sql.SQL("GRANT UPDATE ({}) ON interp.models TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, MODEL_FILE_COLUMNS)), w))
    s.append(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA interp TO {}").format(w))
    # Domain tables: what the seeded SQL actors and gates touch.
    if domain is None:
        s.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(domain_schema), w))
        s.append(sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {} TO {}")
                 .format(sql.Identifier(domain_schema), w))
        s.append(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            sql.Identifier(domain_schema), w))
    elif domain:
        for schema in sorted({(t.rpartition(".")[0] or "public") for t in domain}):
            s.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), w))
        s.append(sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
            sql.SQL(", ").join(_table(t) for t in domain), w))
    for user, kind in logins or []:
        if kind not in KINDS:
            raise InterpError(f"--login {user}={kind}: the role must be worker or ops")
        if user in (WORKER, OPS):
            raise InterpError(f"--login {user}: choose a user name other than the group roles")
        s.append(_create_role(user, login=True))
        s.append(sql.SQL("ALTER ROLE {} LOGIN INHERIT").format(sql.Identifier(user)))
        if password is not None:
            s.append(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user),
                                                                 sql.Literal(password)))
        s.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier(KINDS[kind]),
                                                  sql.Identifier(user)))
    return s


def apply_roles(conn: psycopg.Connection[Any], **kw: Any) -> list[str]:
    """Runs role_statements in the caller's transaction; returns them as text."""
    done = []
    for stmt in role_statements(conn, **kw):
        conn.execute(stmt)
        done.append(stmt.as_string(conn))
    return done
