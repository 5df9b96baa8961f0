"""The command line: a thin click layer over the library.

Every command's help ends with an example. Errors become one line and a
non-zero exit in one place (`main`); `-v` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click
from tabulate import tabulate

from . import __version__
from .errors import InterpError, NotFound


class Context:
    def __init__(self, dsn: str | None, verbose: bool):
        self.dsn_option = dsn
        self.verbose = verbose
        self._db = None

    @property
    def db(self):
        if self._db is None:
            from .config import choose_database
            from .db import Database

            self._db = Database(choose_database(self.dsn_option))
        return self._db

    def migrate_if_needed(self) -> None:
        from .migrations import migrate

        migrate(self.db.dsn)


pass_ctx = click.make_pass_decorator(Context)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.option("--dsn", envvar=None, help="PostgreSQL connection string (else INTERP_DSN, "
              "else PG* variables, else embedded PostgreSQL in $INTERP_HOME).")
@click.option("-v", "--verbose", is_flag=True, help="Log more, and show tracebacks.")
@click.version_option(__version__, prog_name="interp")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, verbose: bool) -> None:
    """interp: a workflow interpreter driven by PostgreSQL.

    Workflows, steps, actors, models and prompts are rows in the `interp`
    schema; `interp run` reads them and drives subjects through the steps in
    waves, checkpointing every transition.

    Example:

        interp db migrate && interp seed load && interp run --workflow 3001 --until-idle
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(dsn, verbose)


# ---------------------------------------------------------------- db

@cli.group()
def db() -> None:
    """Schema migrations and connection details.

    Example:

        interp db migrate
    """


@db.command("migrate")
@pass_ctx
def db_migrate(ctx: Context) -> None:
    """Apply pending schema migrations (idempotent, advisory-locked).

    Example:

        interp db migrate
    """
    from .migrations import migrate

    applied = migrate(ctx.db.dsn)
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}", err=True)
    else:
        click.echo("nothing to migrate", err=True)


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def db_status(ctx: Context, as_json: bool) -> None:
    """List applied and pending migrations.

    Example:

        interp db status --json
    """
    from .migrations import migration_status

    rows = ctx.db.run(migration_status)
    if as_json:
        emit_json(rows)
    else:
        click.echo(tabulate(rows, headers="keys"))


@db.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def db_info(ctx: Context, as_json: bool) -> None:
    """Say where interp is connected and which server version answers.

    Example:

        interp db info
    """
    def read(conn):
        return conn.execute("SELECT version() AS version, current_database() AS database, "
                            "current_user AS user").fetchone()

    row = ctx.db.run(read)
    info = {"target": ctx.db.target, "chosen_by": ctx.db.choice.origin, **row}
    if as_json:
        emit_json(info)
    else:
        for k, v in info.items():
            click.echo(f"{k:10} {v}")


# ---------------------------------------------------------------- seed

@cli.group()
def seed() -> None:
    """Load workflow definitions and sample data.

    Example:

        interp seed load
    """


@seed.command("load")
@click.argument("paths", nargs=-1)
@pass_ctx
def seed_load(ctx: Context, paths: tuple[str, ...]) -> None:
    """Run SQL seed files, each in its own transaction (a folder means its *.sql files).

    With no PATHS, load the seeds that ship with interp: the domain tables,
    the skills list, the worked example (workflow 1001) and workflow 3001.

    Example:

        interp seed load && interp seed load my_seeds/ extra.sql
    """
    from .seeds import expand_paths, load_seed_file, packaged_seeds

    files = expand_paths(list(paths)) if paths else packaged_seeds()
    ctx.migrate_if_needed()
    for path in files:
        load_seed_file(ctx.db, path)
        click.echo(f"loaded {path}", err=True)


@seed.command("postings")
@click.option("--count", default=50, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option("--seed", "rng_seed", default=42, show_default=True, help="Random seed.")
@click.option("--start-id", default=1, show_default=True, type=click.IntRange(1))
@pass_ctx
def seed_postings(ctx: Context, count: int, rng_seed: int, start_id: int) -> None:
    """Generate realistic, varied sample job postings (deterministic for a seed).

    Needs the postings table, which `interp seed load` creates.

    Example:

        interp seed postings --count 50 --seed 7
    """
    from actors.sample_postings import insert_postings

    n = insert_postings(ctx.db, count=count, seed=rng_seed, start_id=start_id)
    click.echo(f"wrote {n} postings", err=True)


def _register() -> None:
    from .cli_run import pause, resume, run, workflow

    for command in (workflow, run, pause, resume):
        cli.add_command(command)
    # Commands that live in optional modules are added when present.
    import importlib

    for module, names in (("interpreter.cli_ops", ("status", "trace", "dashboard", "prune")),
                          ("interpreter.cli_models", ("models",)),
                          ("interpreter.cli_security", ("roles",))):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise  # the module exists but something it imports is missing
            continue
        for name in names:
            found = getattr(mod, name, None)
            if isinstance(found, click.Command):
                (db if module.endswith("security") else cli).add_command(found)


_register()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InterpError as exc:
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # one line, not a traceback, unless -v
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        click.echo(f"error: {exc.__class__.__name__}: {exc}".splitlines()[0], err=True)
        sys.exit(1)


__all__ = ["cli", "main", "NotFound"]
