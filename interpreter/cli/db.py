"""`interp db ...`: schema migrations and connection details."""

from __future__ import annotations

import click
from tabulate import tabulate

from .context import Context, emit_json


@click.group()
def db() -> None:
    """Schema migrations and connection details.

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
