"""The seed loader finds transaction control statements the way PostgreSQL
splits a file: not inside quotes, dollar-quoted bodies, comments, parentheses
or the body of a BEGIN ATOMIC function."""

from __future__ import annotations

import pytest

from interpreter.seeds import transaction_control
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("text,found", [
    ("BEGIN;\nINSERT INTO x VALUES (1);\nCOMMIT;\n", [(1, "BEGIN"), (3, "COMMIT")]),
    ("select 1; commit", [(1, "COMMIT")]),
    ("SELECT 1;\n  start  transaction;", [(2, "START TRANSACTION")]),
    ("savepoint a; release a; prepare transaction 'x';",
     [(1, "SAVEPOINT"), (1, "RELEASE"), (1, "PREPARE TRANSACTION")]),
    ("select a$b, $1 from t; abort; end; rollback;", [(1, "ABORT"), (1, "END"), (1, "ROLLBACK")]),
    ("DO $f$ BEGIN PERFORM '$$'; END $f$; end;", [(1, "END")]),
    ("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END;"
     "\nrollback;", [(2, "ROLLBACK")]),
])
def test_transaction_control_is_found(text, found):
    assert transaction_control(text) == found


@pytest.mark.parametrize("text", [
    "select 'BEGIN; COMMIT;';",
    "select E'it\\'s; commit';",
    'select "begin;" from t; select "commit"',
    "-- commit;\nselect 1;",
    "/* begin; /* nested */ commit; */ select 1;",
    "DO $$ BEGIN PERFORM 1; COMMIT; END $$;",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN 1; END';",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; "
    "SELECT CASE WHEN true THEN 2 END; END;",
    "CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO a VALUES (1); END_X; SELECT 1);",
    "PREPARE q AS SELECT 1; EXECUTE q;",
    "INSERT INTO t (begin_at, commit) VALUES (1, 2);",
])
def test_quoted_and_nested_words_are_not_transaction_control(text):
    assert transaction_control(text) == []


def test_the_shipped_seeds_and_the_golden_export_have_none():
    files = sorted((REPO_ROOT / "seeds").glob("*.sql")) + [REPO_ROOT / "tests" / "golden"
                                                           / "3001_export.sql"]
    assert {f.name: transaction_control(f.read_text(encoding="utf-8")) for f in files} == {
        f.name: [] for f in files}
