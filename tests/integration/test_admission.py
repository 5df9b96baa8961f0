"""Admission: the entry point's query runs as written, and validate runs the very
statement a run admits with."""

from __future__ import annotations

import pytest

from interpreter.definitions import load_workflow
from interpreter.engine import Runner, RunOptions
from interpreter.errors import DefinitionError
from interpreter.validate import validate_workflow
from tests.helpers import add_items, make_workflow

STEPS = [{"number": 1, "name": "Script", "actor": "ok_adm"}]
ACTORS = [{"name": "ok_adm", "kind": "script", "target": "tests.actors.faults:ok"}]


def workflow(conn, admit_sql: str, wf: int = 70) -> None:
    add_items(conn, 6)
    make_workflow(conn, wf, actors=ACTORS, steps=STEPS, transitions=[(1, "*", None)],
                  admit_sql=admit_sql)


def run(db, wf: int = 70):
    return Runner(db, wf, RunOptions(until_idle=True, poll_s=0.05)).run()


def admitted(conn, wf: int = 70) -> set[str]:
    return {r["subject_id"] for r in conn.execute(
        "SELECT subject_id FROM interp.subject_state WHERE workflow_id = %s", (wf,))}


@pytest.mark.parametrize("admit_sql", [
    # a second line used to land outside the comment that held the query
    "SELECT id AS subject_id\n  FROM public.items\n WHERE enabled AND id <= 4",
    # a trailing line comment used to swallow the closing parenthesis
    "SELECT id AS subject_id FROM public.items WHERE id <= 4 -- the first four",
    # a statement's semicolon cannot end a subquery
    "SELECT id AS subject_id FROM public.items WHERE id <= 4;\n",
])
def test_entry_point_query_runs_as_written(db, conn, admit_sql):
    workflow(conn, admit_sql)
    assert validate_workflow(conn, load_workflow(conn, 70)) == []
    run(db)
    assert admitted(conn) == {"1", "2", "3", "4"}


def test_validate_and_run_agree_on_a_broken_entry_point(db, conn):
    broken = "SELECT id AS subject_id\n  FROM public.items\n WHERE no_such_column"
    workflow(conn, broken)
    problems = validate_workflow(conn, load_workflow(conn, 70))
    assert any("entry point 'all'" in p and "no_such_column" in p for p in problems)
    with pytest.raises(DefinitionError) as err:
        Runner(db, 70, RunOptions(until_idle=True, poll_s=0.05, validate=False)).run()
    message = str(err.value)
    assert "\n" not in message
    assert "entry point 'all' of workflow 70" in message
    assert "no_such_column" in message
    assert "(query: SELECT id AS subject_id FROM public.items WHERE no_such_column)" in message


def test_admission_error_quotes_at_most_200_characters(db, conn):
    long_sql = "SELECT id AS subject_id FROM public.items WHERE " + " AND ".join(
        f"id <> {i}" for i in range(100)) + " AND nope"
    workflow(conn, long_sql)
    with pytest.raises(DefinitionError) as err:
        Runner(db, 70, RunOptions(until_idle=True, poll_s=0.05, validate=False)).run()
    quoted = str(err.value).split("(query: ", 1)[1]
    assert quoted.startswith("SELECT id AS subject_id")
    assert len(quoted) == 200 + len("...)")
