"""`interp workflow validate` catches each class of bad definition."""

from __future__ import annotations

import pytest

from interpreter.definitions import load_workflow
from interpreter.validate import validate_workflow
from tests.helpers import GATE_NOT_DONE_SQL, make_workflow


def problems(conn, wf):
    return validate_workflow(conn, load_workflow(conn, wf))


def good(conn, wf=40, **overrides):
    steps = [{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
             {"number": 2, "actor": "ok40"}]
    transitions = [(1, "RUN", 2), (1, "SKIP", None), (2, "*", None)]
    make_workflow(conn, wf, actors=[{"name": "ok40", "kind": "script",
                                     "target": "tests.actors.faults:ok"}],
                  steps=overrides.get("steps", steps),
                  transitions=overrides.get("transitions", transitions),
                  admit_sql=overrides.get("admit_sql",
                                          "SELECT id AS subject_id FROM public.items"))


def test_a_good_workflow_has_no_problems(conn):
    good(conn)
    assert problems(conn, 40) == []


def test_transition_to_a_missing_step(conn):
    good(conn, transitions=[(1, "RUN", 2), (1, "SKIP", 9), (2, "*", None)])
    assert any("missing step 9" in p for p in problems(conn, 40))


def test_unreachable_step(conn):
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "ok40"}, {"number": 3, "actor": "ok40"}],
         transitions=[(1, "RUN", 2), (1, "SKIP", None), (2, "*", None), (3, "*", None)])
    assert any("step 3" in p and "unreachable" in p for p in problems(conn, 40))


def test_gate_without_sql(conn):
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": " "},
                      {"number": 2, "actor": "ok40"}])
    assert any("gate without SQL" in p for p in problems(conn, 40))


def test_actor_that_does_not_exist(conn):
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "nobody"}])
    assert any("actor 'nobody' does not exist" in p for p in problems(conn, 40))


def test_model_that_does_not_exist(conn):
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES ('m40', 'model', 'ghost')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t40', 'hi')")
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "m40", "template": "t40"}])
    assert any("model 'ghost'" in p for p in problems(conn, 40))


@pytest.mark.parametrize("source,needle", [
    ("http://127.0.0.1:8080#parallel=0", "parallel=N with N >= 1"),
    ("http://a.example:8080, ftp://b.example", "must be an http(s):// URL"),
    ("http://a.example/v1 http://a.example", "listed twice"),
])
def test_a_remote_model_source_that_is_malformed_names_the_model(conn, source, needle):
    conn.execute("INSERT INTO interp.models (name, source) VALUES ('remote40', %s)", (source,))
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES "
                 "('r40', 'model', 'remote40')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t40', 'hi')")
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "r40", "template": "t40"}])
    found = [p for p in problems(conn, 40) if "remote40" in p]
    assert len(found) == 1 and found[0].startswith("model 'remote40': ") and needle in found[0]


def test_a_well_formed_remote_model_source_is_no_problem(conn):
    # validate never contacts the servers: these need not be up
    conn.execute("INSERT INTO interp.models (name, source) VALUES ('remote41', "
                 "'http://127.0.0.1:9/v1#parallel=2, https://b.example')")
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES "
                 "('r41', 'model', 'remote41')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t41', 'hi')")
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "r41", "template": "t41"}])
    assert problems(conn, 40) == []


def test_output_schema_that_is_not_json_schema(conn):
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "ok40", "output_schema": {"type": "banana"}}])
    assert any("not valid JSON Schema" in p for p in problems(conn, 40))


def test_entry_point_whose_query_does_not_run(conn):
    good(conn, admit_sql="SELECT id AS subject_id FROM public.no_such_table")
    assert any("entry point" in p and "does not run" in p for p in problems(conn, 40))


def test_gate_sql_that_does_not_run(conn):
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": "SELECT nope FROM nowhere"},
                      {"number": 2, "actor": "ok40"}])
    assert any("SQL does not run" in p for p in problems(conn, 40))


def test_cycle_with_no_exit(conn):
    good(conn, transitions=[(1, "RUN", 2), (1, "SKIP", 2), (2, "*", 1)])
    assert any("cycle with no exit" in p for p in problems(conn, 40))


@pytest.mark.parametrize("target,needle", [
    ("os:system", "outside the allowed module prefixes"),
    ("subprocess:run", "outside the allowed module prefixes"),
    ("actors.no_such_module:fn", "cannot import"),
    ("tests.actors.faults:no_such_function", "has no function"),
])
def test_script_target_not_allowed_or_missing(conn, target, needle):
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES ('bad40', 'script', %s)",
                 (target,))
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "bad40"}])
    assert any(needle in p for p in problems(conn, 40))


def test_every_problem_is_listed_at_once(cli, conn):
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": " "},
                      {"number": 2, "actor": "nobody", "output_schema": {"type": "banana"}}],
         transitions=[(1, "RUN", 2), (1, "SKIP", 8), (2, "*", None)])
    proc = cli("workflow", "validate", "40", check=False)
    assert proc.returncode == 1
    lines = [x for x in proc.stdout.splitlines() if x.startswith("problem:")]
    assert len(lines) >= 4, proc.stdout


def test_a_subject_column_named_like_a_context_name_is_a_warning_not_a_problem(db, conn):
    from interpreter.engine import Runner, RunOptions
    from interpreter.validate import validation_warnings

    conn.execute("INSERT INTO interp.prompt_templates (name, body) "
                 "VALUES ('t41', 'Title: {{ title }} / {{ subject.subject }}')")
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "ok40", "template": "t41"}])
    conn.execute("ALTER TABLE public.items ADD COLUMN subject text, ADD COLUMN step int")
    wf = load_workflow(conn, 40)
    assert validate_workflow(conn, wf) == []
    warnings = validation_warnings(conn, wf)
    assert len(warnings) == 2
    assert "subject column 'subject' is shadowed in templates" in warnings[0]
    assert "write subject.subject" in warnings[0]
    assert "'step'" in warnings[1]
    # a warning does not refuse the run
    Runner(db, 40, RunOptions(until_idle=True, poll_s=0.05)).run()


def test_validate_command_prints_warnings_and_stays_valid(cli, conn):
    conn.execute("INSERT INTO interp.prompt_templates (name, body) "
                 "VALUES ('t41', 'Title: {{ title }}')")
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "ok40", "template": "t41"}])
    conn.execute("ALTER TABLE public.items ADD COLUMN subject text")
    res = cli("workflow", "validate", "40")
    assert res.returncode == 0 and "workflow 40 is valid" in res.stderr
    assert "warning: " in res.stderr and "'subject' is shadowed" in res.stderr


def test_no_shadow_warning_without_templates(conn):
    from interpreter.validate import validation_warnings

    good(conn)
    conn.execute("ALTER TABLE public.items ADD COLUMN subject text")
    assert validation_warnings(conn, load_workflow(conn, 40)) == []
