"""The command line: a thin click layer over the library, one module per command group.

Every command's help ends with an example. Errors become one line and a
non-zero exit in one place (`main`); `-v` shows the traceback. The commands
hold no SQL: they call library functions, whose queries live in
``interpreter/sql/``.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import InterpError
from .breaker import breaker
from .context import Context
from .db import db
from .experiment import experiment
from .models import models
from .operator import cancel, retry, rewind
from .ops import dashboard, prune, status, trace
from .run import pause, resume, run
from .security import roles
from .seed import seed
from .timeline import timeline
from .workflow import workflow


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
    if verbose:   # llama.cpp's own lines, logged at DEBUG (interpreter/llm/native_log.py)
        logging.getLogger("interpreter.llm.native_log").setLevel(logging.DEBUG)
    if ctx.obj is None:
        ctx.obj = Context()
    ctx.obj.configure(dsn, verbose)


for command in (db, seed, workflow, run, pause, resume, status, trace, prune, dashboard, models,
                breaker, timeline, retry, rewind, cancel, experiment):
    cli.add_command(command)
db.add_command(roles)


def main(argv: list[str] | None = None) -> None:
    """The `interp` console script: run the command, turn failures into one line."""
    app = Context()  # the root command fills it in; here it says whether -v was given
    try:
        code = cli.main(args=argv, prog_name="interp", standalone_mode=False, obj=app)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InterpError as exc:
        if app.verbose:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # one line, not a traceback, unless -v
        if app.verbose:
            raise
        click.echo(f"error: {exc.__class__.__name__}: {exc}".splitlines()[0], err=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


__all__ = ["cli", "main"]
