"""What every command shares: the options of `interp` itself, and JSON output."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # psycopg is imported on first use, not by `interp --help`
    from ..db import Database


class Context:
    """The root options (`--dsn`, `-v`), and the database opened on first use.

    `main` creates it before parsing, so after a failure it still knows whether
    `-v` was given; the root command fills it in."""

    def __init__(self, dsn: str | None = None, verbose: bool = False):
        self.dsn_option = dsn
        self.verbose = verbose
        self._db: Database | None = None

    def configure(self, dsn: str | None, verbose: bool) -> None:
        self.dsn_option = dsn
        self.verbose = verbose

    @property
    def db(self) -> Database:
        if self._db is None:
            from ..config import choose_database
            from ..db import Database

            self._db = Database(choose_database(self.dsn_option))
        return self._db

    def migrate_if_needed(self) -> None:
        from ..migrations import migrate

        migrate(self.db.dsn)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
