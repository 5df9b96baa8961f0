"""No query of the registry has a psycopg.sql placeholder inside a comment: the
formatting fills placeholders there too, and a multi-line value (an author's
query) would then end the comment and leave its second line as SQL."""

from __future__ import annotations

import re

from interpreter.queries import registry

PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def test_no_placeholder_in_a_comment():
    offenders = [(name, line) for name, text in registry().items()
                 for line in text.splitlines()
                 if "--" in line and PLACEHOLDER.search(line.split("--", 1)[1])]
    assert offenders == []
