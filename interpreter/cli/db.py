"""`interp db ...`: schema migrations, connection details, the embedded server."""

from __future__ import annotations

from pathlib import Path

import click
from tabulate import tabulate

from .context import Context, emit_json


@click.group()
def db() -> None:
    """Schema migrations, connection details, the embedded server.

    Example:

        interp db migrate
    """


@db.command("migrate")
@click.pass_obj
def db_migrate(ctx: Context) -> None:
    """Apply pending schema migrations (idempotent, advisory-locked).

    Example:

        interp db migrate
    """
    from ..migrations import migrate

    applied = migrate(ctx.db.dsn)
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}", err=True)
    else:
        click.echo("nothing to migrate", err=True)


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def db_status(ctx: Context, as_json: bool) -> None:
    """List applied and pending migrations.

    Example:

        interp db status --json
    """
    from ..migrations import migration_status

    rows = ctx.db.run(migration_status)
    if as_json:
        emit_json(rows)
    else:
        click.echo(tabulate(rows, headers="keys"))


@db.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def db_info(ctx: Context, as_json: bool) -> None:
    """Say where interp is connected and which server version answers.

    Example:

        interp db info
    """
    from ..admin import server_info

    info = {"target": ctx.db.target, "chosen_by": ctx.db.choice.origin,
            **ctx.db.run(server_info)}
    if as_json:
        emit_json(info)
    else:
        for k, v in info.items():
            click.echo(f"{k:10} {v}")


NOT_EMBEDDED_EXIT = 3
"""Exit code of `interp db start|stop` when a DSN is in use: nothing to do here,
and not a failure of the command's own (a script can tell the two apart)."""


def _embedded_pgdata(ctx: Context) -> Path:
    """The embedded server's data folder; exits NOT_EMBEDDED_EXIT with one line
    when --dsn, INTERP_DSN or the PG* variables name another server."""
    from ..config import embedded_pgdata, embedded_running, external_database

    chosen = external_database(ctx.dsn_option)
    if chosen is not None:
        origin = "the PG* variables" if chosen.origin == "libpq environment" else chosen.origin
        # One started earlier without a DSN may still run: say where, and how to stop it.
        left = (f" (an embedded server still runs in {embedded_pgdata()}: run "
                f"`interp db stop` without {origin} to stop it)"
                if embedded_running(embedded_pgdata()) else "")
        click.echo(f"the embedded PostgreSQL is not in use: interp connects to the server "
                   f"named by {origin}{left}", err=True)
        click.get_current_context().exit(NOT_EMBEDDED_EXIT)
    return embedded_pgdata()


@db.command("start")
@click.pass_obj
def db_start(ctx: Context) -> None:
    """Start the embedded PostgreSQL in $INTERP_HOME (idempotent).

    Any interp command starts it when it needs it; this starts it ahead.
    Prints its data folder on stdout. With --dsn, INTERP_DSN or PG* variables
    set it says the embedded server is not in use and exits 3.

    Example:

        interp db start
    """
    from ..config import embedded_running, start_embedded

    pgdata = _embedded_pgdata(ctx)
    if embedded_running(pgdata):
        click.echo(f"the embedded PostgreSQL in {pgdata} is already running; "
                   f"`interp db stop` stops it", err=True)
    else:
        start_embedded(pgdata)
        click.echo(f"started the embedded PostgreSQL in {pgdata}; `interp db stop` stops it",
                   err=True)
    click.echo(str(pgdata))


@db.command("stop")
@click.pass_obj
def db_stop(ctx: Context) -> None:
    """Stop the embedded PostgreSQL in $INTERP_HOME (idempotent).

    Fast shutdown: open sessions are ended and their transactions rolled back
    (a worker still running waits for the database, up to its --db-timeout).
    Not running: says so, exit 0. With --dsn, INTERP_DSN or PG* variables set
    it says the embedded server is not in use and exits 3.

    Example:

        interp db stop
    """
    from ..config import stop_embedded

    pgdata = _embedded_pgdata(ctx)
    if stop_embedded(pgdata):
        click.echo(f"stopped the embedded PostgreSQL in {pgdata}", err=True)
    else:
        click.echo(f"the embedded PostgreSQL in {pgdata} is not running", err=True)
