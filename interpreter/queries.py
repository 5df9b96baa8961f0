"""The query registry: every query lives in a file under interpreter/sql/, by name.

The files split the queries by concern (``queries.sql`` for the engine, others
for definitions and ops); a name is unique across all of them, so code only
says which query it wants, not where it lives.

Code names the query it wants (``Q["claim_wave"]``), so the SQL can be read,
reviewed and golden-tested in one place, as procrastinate does.

A block headed ``-- fragment: x`` is not a query of its own: a line
``-- include: x`` inside a query is replaced by its text, so two queries that
end the same way (the wave commit) share one copy of that SQL.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from .errors import InvalidValue

_HEAD = re.compile(r"^--\s*(name|fragment):\s*([a-z0-9_]+)\s*$")
_INCLUDE = re.compile(r"^--\s*include:\s*([a-z0-9_]+)\s*$")


def parse_registry(text: str) -> dict[str, str]:
    blocks: dict[tuple[str, str], list[str]] = {}
    current: tuple[str, str] | None = None
    for line in text.splitlines():
        m = _HEAD.match(line)
        if m:
            current = (m.group(1), m.group(2))
            if any(name == current[1] for _, name in blocks):
                raise InvalidValue(f"query {current[1]!r} defined twice")
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    for lines in blocks.values():
        drop_trailing_comments(lines)
    fragments = {name: "\n".join(lines).strip()
                 for (kind, name), lines in blocks.items() if kind == "fragment"}

    def expand(line: str) -> str:
        m = _INCLUDE.match(line)
        if not m:
            return line
        if m.group(1) not in fragments:
            raise InvalidValue(f"include of unknown fragment {m.group(1)!r}")
        return fragments[m.group(1)]

    return {name: "\n".join(expand(line) for line in lines).strip()
            for (kind, name), lines in blocks.items() if kind == "name"}


def drop_trailing_comments(lines: list[str]) -> None:
    """Comment and blank lines after a block's statement introduce the next block (a
    section heading), so they are not part of this one: a statement whose text is
    written out (an export) must not carry them. An `-- include:` line is SQL."""
    while lines and (not lines[-1].strip() or (lines[-1].lstrip().startswith("--")
                                                and not _INCLUDE.match(lines[-1]))):
        lines.pop()


def registry_files() -> list[str]:
    """The registry's file names, read from the installed package (not the checkout)."""
    folder = resources.files(__package__) / "sql"
    return sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))


@cache
def registry() -> dict[str, str]:
    merged: dict[str, str] = {}
    folder = resources.files(__package__) / "sql"
    for name in registry_files():
        # Fragments are local to their file; query names are global.
        for query, text in parse_registry((folder / name).read_text(encoding="utf-8")).items():
            if query in merged:
                raise InvalidValue(f"query {query!r} defined twice (again in sql/{name})")
            merged[query] = text
    return merged


class _Q:
    def __getitem__(self, name: str) -> str:
        return registry()[name]


Q = _Q()
