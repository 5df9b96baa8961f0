import re
from pathlib import Path

import pytest

from interpreter.queries import parse_registry, registry

ROOT = Path(__file__).resolve().parents[2]


def test_registry_parses_named_blocks():
    text = "-- name: a\nSELECT 1;\n\n-- name: b\nSELECT 2\n"
    assert parse_registry(text) == {"a": "SELECT 1;", "b": "SELECT 2"}


def test_every_registered_query_is_used_and_every_used_query_exists():
    code = "\n".join(p.read_text() for p in (ROOT / "interpreter").rglob("*.py"))
    used = set(re.findall(r'Q\["([a-z0-9_]+)"\]', code))
    assert used == set(registry())


def test_fragments_are_included_and_are_not_queries():
    text = ("-- name: a\nWITH v AS (SELECT 1)\n-- include: tail\n\n"
            "-- fragment: tail\nSELECT * FROM v\n")
    assert parse_registry(text) == {"a": "WITH v AS (SELECT 1)\nSELECT * FROM v"}


def test_including_an_unknown_fragment_is_an_error():
    with pytest.raises(ValueError, match="unknown fragment 'nope'"):
        parse_registry("-- name: a\nSELECT 1\n-- include: nope\n")


def test_comments_after_a_statement_belong_to_the_next_block():
    text = ("-- name: a\n-- why a\nSELECT 1\n\n-- ---- next section\n-- about b\n"
            "-- name: b\nSELECT 2 -- inline stays\n")
    assert parse_registry(text) == {"a": "-- why a\nSELECT 1", "b": "SELECT 2 -- inline stays"}
