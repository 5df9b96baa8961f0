"""`interp seed load`: each SQL file in its own transaction, all or nothing.

With no path it loads the seeds that ship inside the package
(``interpreter/seed_sql``, the repository's ``seeds/`` folder): the domain
tables, the skills list, the worked example 1001 and workflow 3001, in name
order.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg

from .db import Database
from .errors import InterpError, first_line


def packaged_seeds() -> list[Traversable]:
    """The seed files inside the installed package, in the order they load."""
    folder = resources.files(__package__) / "seed_sql"
    if not folder.is_dir():
        raise InterpError(f"no seeds folder at {folder}; the interp install is incomplete")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; a folder stands for its *.sql files in name order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.sql")))
        elif p.is_file():
            files.append(p)
        else:
            raise InterpError(f"seed file not found: {p}")
    return files


def line_of(text: str, position: int | None) -> int | None:
    if not position:
        return None
    return text.count("\n", 0, position - 1) + 1


def load_seed_file(db: Database, path: Path | Traversable) -> None:
    text = path.read_text(encoding="utf-8")

    def apply(conn: psycopg.Connection[Any]) -> None:
        # No parameters, so psycopg sends the file as one simple query:
        # several statements, and `%` needs no escaping.
        conn.execute(text.encode("utf-8"))

    try:
        db.run(apply, retry=False)
    except psycopg.Error as exc:
        pos = getattr(exc.diag, "statement_position", None)
        line = line_of(text, int(pos)) if pos else None
        where = f"{path}:{line}" if line else str(path)
        raise InterpError(f"seed {where}: {first_line(exc)} (nothing from this file was applied)") \
            from exc
