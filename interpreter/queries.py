"""The query registry: every engine query lives in interpreter/sql/queries.sql, by name.

Code names the query it wants (``Q["claim_wave"]``), so the SQL can be read,
reviewed and golden-tested in one place, as procrastinate does.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_SQL_FILE = Path(__file__).parent / "sql" / "queries.sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$")


def parse_registry(text: str) -> dict[str, str]:
    queries: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _NAME.match(line)
        if m:
            current = m.group(1)
            if current in queries:
                raise ValueError(f"query {current!r} defined twice")
            queries[current] = []
        elif current is not None:
            queries[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in queries.items()}


@cache
def registry() -> dict[str, str]:
    return parse_registry(_SQL_FILE.read_text())


class _Q:
    def __getitem__(self, name: str) -> str:
        return registry()[name]


Q = _Q()
