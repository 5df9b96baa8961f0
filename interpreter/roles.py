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
from .queries import Q

WORKER = "interp_worker"
OPS = "interp_ops"
KINDS = {"worker": WORKER, "ops": OPS}

# Written by workflow authors; a worker only reads them.
DEFINITION_TABLES = ("workflows", "steps", "step_transitions", "entry_points", "actors",
                     "models", "prompt_templates")
# Written by the engine while it runs.
RUNTIME_TABLES = ("subject_state", "checkpoints", "waves", "runs", "actor_health",
                  "actor_limits", "model_events", "prompts", "lane_intervals", "utilisation")
# Kept up to date by triggers on the runtime tables (schema/0002); a trigger runs
# with the privileges of the worker that fired it.
ROLLUP_TABLES = ("checkpoint_totals", "checkpoint_minutes", "subject_counts")
# A worker records the sha256 and size of a model file it loaded (nothing else).
MODEL_FILE_COLUMNS = ("sha256", "size_bytes", "updated_at")


def _create_role(name: str, login: bool = False) -> sql.Composed:
    # CREATE ROLE has no IF NOT EXISTS; two sessions may race, so the statement
    # checks pg_roles and also catches the duplicate.
    return _stmt(Q["role_create"], name=sql.Literal(name), role=sql.Identifier(name),
                 login=sql.SQL("LOGIN" if login else "NOLOGIN"))


def _table(name: str) -> sql.Identifier:
    schema, _, table = name.rpartition(".")
    return sql.Identifier(schema or "public", table)


def _tables(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(_table(t) for t in names)


def _stmt(template: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(template).format(**parts)


def existing_tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute(Q["role_schema_tables"], {"schema": schema}).fetchall()
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
    s.append(_stmt(Q["role_grant_interp_usage"], worker=w, ops=o))
    s.append(_stmt(Q["role_grant_interp_select"], worker=w, ops=o))
    s.append(_stmt(Q["role_default_interp_select"], worker=w, ops=o))
    # Ops writes nothing: take back anything granted before (e.g. by hand).
    s.append(_stmt(Q["role_revoke_ops_writes"], ops=o))
    s.append(_stmt(Q["role_revoke_interp_create"], worker=w, ops=o))
    # The worker: definitions read-only, runtime tables insert/update, no DELETE.
    s.append(_stmt(Q["role_revoke_definition_writes"], worker=w, tables=_tables(
        [f"interp.{t}" for t in DEFINITION_TABLES if t in interp])))
    s.append(_stmt(Q["role_grant_runtime_writes"], worker=w, tables=_tables(
        [f"interp.{t}" for t in RUNTIME_TABLES + ROLLUP_TABLES if t in interp])))
    s.append(_stmt(Q["role_grant_model_file_columns"], worker=w,
                   columns=sql.SQL(", ").join(map(sql.Identifier, MODEL_FILE_COLUMNS))))
    s.append(_stmt(Q["role_grant_interp_sequences"], worker=w))
    # Domain tables: what the seeded SQL actors and gates touch.
    if domain is None:
        schema = sql.Identifier(domain_schema)
        s.append(_stmt(Q["role_grant_schema_usage"], schema=schema, worker=w))
        s.append(_stmt(Q["role_grant_schema_tables"], schema=schema, worker=w))
        s.append(_stmt(Q["role_grant_schema_sequences"], schema=schema, worker=w))
    elif domain:
        for name in sorted({(t.rpartition(".")[0] or "public") for t in domain}):
            s.append(_stmt(Q["role_grant_schema_usage"], schema=sql.Identifier(name), worker=w))
        s.append(_stmt(Q["role_grant_domain_tables"], tables=_tables(domain), worker=w))
    for user, kind in logins or []:
        s.extend(_login_statements(user, kind, password))
    return s


def _login_statements(user: str, kind: str, password: str | None) -> list[sql.Composed]:
    if kind not in KINDS:
        raise InterpError(f"--login {user}={kind}: the role must be worker or ops")
    if user in (WORKER, OPS):
        raise InterpError(f"--login {user}: choose a user name other than the group roles")
    who = sql.Identifier(user)
    s = [_create_role(user, login=True), _stmt(Q["role_login_inherit"], user=who)]
    if password is not None:
        s.append(_stmt(Q["role_password"], user=who, password=sql.Literal(password)))
    s.append(_stmt(Q["role_grant_membership"], group=sql.Identifier(KINDS[kind]), user=who))
    return s


def apply_roles(conn: psycopg.Connection[Any], **kw: Any) -> list[str]:
    """Runs role_statements in the caller's transaction; returns them as text."""
    done = []
    for stmt in role_statements(conn, **kw):
        conn.execute(stmt)
        done.append(stmt.as_string(conn))
    return done
