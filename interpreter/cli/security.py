"""`interp db roles`: least-privilege roles for workers and ops (docs/security.md)."""

from __future__ import annotations

import json
import os

import click

from ..errors import InterpError


@click.command("roles")
@click.option("--grant-domain", "grant_domain", metavar="TABLES",
              help="Comma-separated domain tables (schema.table) the worker may read and "
                   "write; default: every table in --domain-schema. 'none' grants none.")
@click.option("--domain-schema", default="public", show_default=True,
              help="Schema whose tables the worker gets when --grant-domain is not given.")
@click.option("--login", "logins", multiple=True, metavar="USER=worker|ops",
              help="Also create a LOGIN user that is a member of a role (repeatable).")
@click.option("--password-env", metavar="VAR",
              help="Set the --login users' password from this environment variable.")
@click.option("--print", "print_only", is_flag=True,
              help="Print the SQL instead of running it.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_obj
def roles(ctx, grant_domain: str | None, domain_schema: str, logins: tuple[str, ...],
          password_env: str | None, print_only: bool, as_json: bool) -> None:
    """Create (idempotently) the roles interp_worker and interp_ops, and grant them.

    interp_worker may run workflows: read the definitions, write the runtime
    tables (no DELETE), and read/write the domain tables its SQL actors use.
    interp_ops may read every interp table and view, and write nothing. Both
    are NOLOGIN; --login makes users that log in as members. Needs a role
    with CREATEROLE (or a superuser); run it again after `interp db migrate`.

    Example:

        interp db roles --grant-domain public.postings,public.review_queue --login etl=worker
    """
    from ..roles import apply_roles

    pairs = []
    for item in logins:
        user, sep, kind = item.partition("=")
        if not sep or not user:
            raise InterpError(f"--login {item!r}: expected USER=worker or USER=ops")
        pairs.append((user, kind))
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise InterpError(f"--password-env {password_env}: the variable is not set")
    domain: list[str] | None = None
    if grant_domain is not None:
        domain = [] if grant_domain.strip().lower() == "none" else [
            t.strip() for t in grant_domain.split(",") if t.strip()]

    def do(conn):
        if print_only:
            from ..roles import role_statements

            return [s.as_string(conn) for s in role_statements(
                conn, domain=domain, domain_schema=domain_schema, logins=pairs,
                password=None)]
        return apply_roles(conn, domain=domain, domain_schema=domain_schema, logins=pairs,
                           password=password)

    import psycopg

    try:
        statements = ctx.db.run(do)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise InterpError(f"cannot create roles: {str(exc).splitlines()[0]} "
                          "(connect as a role with CREATEROLE)") from exc
    if print_only:
        click.echo(";\n".join(statements) + ";")
        return
    if as_json:
        click.echo(json.dumps({"roles": ["interp_worker", "interp_ops"],
                               "logins": [u for u, _ in pairs], "statements": statements},
                              indent=2))
    else:
        click.echo(f"roles interp_worker and interp_ops are ready ({len(statements)} "
                   "statements)" + (f"; logins: {', '.join(u for u, _ in pairs)}" if pairs
                                    else ""), err=True)
