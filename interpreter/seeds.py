"""`interp seed load`: each SQL file in its own transaction, all or nothing.

With no path it loads the seeds that ship inside the package
(``interpreter/seed_sql``, the repository's ``seeds/`` folder): the domain
tables, the skills list, the worked example 1001 and workflow 3001, in name
order.

A file is UTF-8 text (a leading byte-order mark is accepted). The loader owns
the transaction, so a file may not control it: a BEGIN, COMMIT, END, ROLLBACK,
ABORT, START TRANSACTION, SAVEPOINT, RELEASE or PREPARE TRANSACTION statement
(outside string literals, quoted names, dollar quotes and comments) refuses the
file before any of it runs. A COMMIT inside would commit the statements before
it whatever came after, and the promise that a failed file changed nothing
would be false.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
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


NOTHING_APPLIED = "(nothing from this file was applied)"


def read_seed_text(path: Path | Traversable) -> str:
    """The file's text: UTF-8, without a leading byte-order mark. Anything else is
    refused with the file, the byte offset and the line of the first bad byte."""
    data = path.read_bytes()
    skipped = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skipped + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise InterpError(
            f"seed {path}:{line}: not UTF-8 text: byte 0x{data[offset]:02x} at byte offset "
            f"{offset} cannot be decoded; save the file as UTF-8 {NOTHING_APPLIED}") from exc


def load_seed_file(db: Database, path: Path | Traversable) -> None:
    text = read_seed_text(path)
    refused = transaction_control(text)
    if refused:
        at_line, words = refused[0]
        raise InterpError(
            f"seed {path}:{at_line}: {words} is not allowed in a seed file: interp applies each "
            f"file in one transaction of its own; remove the transaction control "
            f"{NOTHING_APPLIED}")

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
        raise InterpError(f"seed {where}: {first_line(exc)} {NOTHING_APPLIED}") from exc


# ---------------------------------------------------------------- transaction control

# Statements that begin, end or split a transaction, by their first words.
_CONTROL_FIRST = {"BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
_CONTROL_TWO = {("START", "TRANSACTION"), ("PREPARE", "TRANSACTION")}

# One token of PostgreSQL's lexical structure, as far as statement boundaries go:
# comments, string literals (standard, E'' with backslash escapes), quoted names,
# dollar-quoted text, words (a `$` inside a word is part of it) and the rest.
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*'?)
  | (?P<string>'(?:[^']|'')*'?)
  | (?P<name>"(?:[^"]|"")*"?)
  | (?P<dollar>\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$)
  | (?P<word>[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


def _block_comment_end(text: str, start: int) -> int:
    """The end of a /* comment */ that opens at start (they nest in PostgreSQL)."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(text)


def _tokens(text: str) -> Iterator[tuple[str, int]]:
    """The file's words in upper case, and each `;`, `(` and `)`, with their offsets:
    everything quoted or commented is skipped."""
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        assert m is not None  # `other` matches any character
        kind, i = m.lastgroup, m.end()
        if kind == "block_comment":
            i = _block_comment_end(text, m.start())
        elif kind == "dollar":
            close = text.find(m.group(), i)
            i = len(text) if close < 0 else close + len(m.group())
        elif kind == "word":
            yield m.group().upper(), m.start()
        elif kind == "other" and m.group() in "();":
            yield m.group(), m.start()


def _is_routine(words: list[str]) -> bool:
    """Whether a statement creates a function or procedure (its body may hold `;`)."""
    head = words[1:2] if words[1:3] != ["OR", "REPLACE"] else words[3:4]
    return words[:1] == ["CREATE"] and head in (["FUNCTION"], ["PROCEDURE"])


def _statements(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each statement's offset and words. A `;` inside parentheses (a rule's
    actions) or inside the body of an SQL-standard function (CREATE FUNCTION ...
    BEGIN ATOMIC ... END: there, as psql counts, each BEGIN or CASE opens a block
    that an END closes) does not end the statement."""
    words: list[str] = []
    start = parens = blocks = 0
    for token, at in _tokens(text):
        if token == ";":
            if parens == 0 and blocks == 0 and words:
                yield start, words
                words = []
            continue
        if token in ("(", ")"):
            parens = max(0, parens + (1 if token == "(" else -1))
            continue
        if not words:
            start = at
        words.append(token)
        if _is_routine(words):
            if token in ("BEGIN", "CASE"):
                blocks += 1
            elif token == "END" and blocks > 0:
                blocks -= 1
    if words:
        yield start, words


def _control(words: list[str]) -> str | None:
    """The transaction control a statement is, by its first words, or None."""
    if words[0] in _CONTROL_FIRST:
        return words[0]
    if tuple(words[:2]) in _CONTROL_TWO:
        return " ".join(words[:2])
    return None


def transaction_control(text: str) -> list[tuple[int, str]]:
    """The transaction control statements of an SQL text: (line, first words) each."""
    found = []
    for start, words in _statements(text):
        what = _control(words)
        if what is not None:
            found.append((line_of(text, start + 1) or 1, what))
    return found
