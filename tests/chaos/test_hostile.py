"""Hostile input: postings built to break things, and definitions built to break things.

Postings: the 73-posting corpus of tests/hostile.py (SQL injection in
every field, template and format-string payloads, shell metacharacters, NUL
bytes, invalid UTF-8, 1 MB fields, RTL marks...) plus two of our own, through
a gate, a script actor, a SQL actor and a SmolLM2 step whose template uses
{{ title }} and {{ description[:200] }}. Nothing may be executed: the canary
table survives, no file appears, `{{ 7*7 }}` stays literal, every subject ends.

Definitions: each broken definition is refused with one clear line before the
run (`interp workflow validate` and `interp run`), or processed inertly.

Reproduce: INTERP_TEST_DSN=... .venv/bin/pytest -q tests/chaos/test_hostile.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from actors.sample_postings import insert_rows
from interpreter.actor_api import Subject
from interpreter.definitions import StepDef
from interpreter.templates import build_context, render
from tests.chaos.common import SMOL_SOURCE, all_invariants, record_figure
from tests.helpers import GATE_NOT_DONE_SQL, add_items, make_workflow
from tests.hostile import hostile_posting, hostile_postings, insert_hostile

pytestmark = [pytest.mark.slow]

WF = 720
PWNED = [Path("/tmp/interp_pwned"), Path("/tmp/interp_pwned_canary")]
TEMPLATE = ("Read this job posting and reply with one word.\n"
            "Title: {{ title }}\nDescription: {{ description[:200] }}")
OWN = [
    hostile_posting(900900, "jinja arithmetic", title="{{ 7*7 }}", description="{{ 7*7 }} "
          "{% if true %}yes{% endif %} {{ self.__init__.__globals__ }}"),
    hostile_posting(900901, "canary killers", title="x'); DROP TABLE public.canary; --",
          description="$(touch /tmp/interp_pwned_canary); `touch /tmp/interp_pwned_canary`",
          company="'; DROP TABLE public.canary; --"),
]

ECHO_SQL = """
INSERT INTO public.hostile_echo (posting_id, title_len, rendered)
SELECT p.posting_id, length(p.title), b->'outputs'->'2'->>'rendered'
  FROM jsonb_array_elements(%(batch)s) AS b
  JOIN public.postings p ON p.posting_id = (b->>'subject_id')::bigint
ON CONFLICT (posting_id) DO NOTHING
RETURNING posting_id::text AS subject_id, 'DONE' AS outcome,
          jsonb_build_object('title_len', title_len) AS output
"""


# The model step takes the postings that aim at the prompt (SmolLM2 on 2 shared
# cores costs about a second a posting; the 1 MB titles cost ten).
FOR_MODEL = ["template payload 1 in title", "template payload 4 in title",
             "all template payloads in description", "NUL in title", "prompt injection",
             "RTL override in description", "1 MB description", "sql injection everywhere",
             "invalid utf-8 via surrogateescape", "shell payload 1 in title"]


def build(conn, model_ids: list[int]) -> None:
    conn.execute("CREATE TABLE public.canary (id int); INSERT INTO public.canary VALUES (1)")
    conn.execute("CREATE TABLE public.hostile_echo (posting_id bigint PRIMARY KEY, "
                 "title_len int, rendered text)")
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (%s, 'hostile', 'public.postings', 'posting_id')", (WF,))
    conn.execute("INSERT INTO interp.models (name, source, n_ctx, n_threads) VALUES "
                 "('hostile_smol', %s, 512, 2)", (SMOL_SOURCE,))
    conn.execute("INSERT INTO interp.prompt_templates (name, version, body) VALUES "
                 "('hostile_prompt', 1, %s)", (TEMPLATE,))
    actors = [("hostile_inspect", "script", "tests.actors.chaos:inspect_text",
               {"template": TEMPLATE}),
              ("hostile_echo", "sql", ECHO_SQL, {}),
              ("hostile_model", "model", "hostile_smol", {})]
    for name, kind, target, params in actors:
        conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                     "(%s, %s, %s, %s)", (name, kind, target, json.dumps(params)))
    gate = ("SELECT posting_id::text AS subject_id, CASE WHEN enabled THEN 'RUN' ELSE 'SKIP' "
            "END AS outcome FROM public.postings WHERE posting_id = ANY(%(ids)s::bigint[])")
    model_gate = ("SELECT posting_id::text AS subject_id, CASE WHEN posting_id = ANY(ARRAY["
                  + ", ".join(str(int(i)) for i in model_ids) + "]::bigint[]) THEN 'RUN' "
                  "ELSE 'SKIP' END AS outcome FROM public.postings "
                  "WHERE posting_id = ANY(%(ids)s::bigint[])")
    steps = [(1, "Gate", "gate", None, None, gate, {}),
             (2, "Inspect", "actor", "hostile_inspect", None, None, {}),
             (3, "Echo", "actor", "hostile_echo", None, None, {}),
             (4, "Pick for model", "gate", None, None, model_gate, {}),
             (5, "Model", "actor", "hostile_model", "hostile_prompt", None,
              {"max_tokens": 8, "retry_base_s": 0.05})]
    for number, name, kind, actor, template, gate_sql, params in steps:
        conn.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, "
                     "template, gate_sql, params, max_attempts, timeout_s) VALUES "
                     "(%s, %s, %s, %s, %s, %s, %s, %s, 2, 60)",
                     (WF, number, name, kind, actor, template, gate_sql, json.dumps(params)))
    for frm, outcome, to in [(1, "RUN", 2), (1, "SKIP", None), (2, "*", 3), (3, "DONE", 4),
                             (4, "RUN", 5), (4, "SKIP", None), (5, "*", None)]:
        conn.execute("INSERT INTO interp.step_transitions VALUES (%s, %s, %s, %s)",
                     (WF, frm, outcome, to))
    conn.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                 "VALUES (%s, 'hostile', 'SELECT posting_id AS subject_id FROM public.postings "
                 "WHERE source = ''hostile''', 1)", (WF,))


def test_hostile_postings_are_processed_inertly(db, conn, cli, smollm2):
    for p in PWNED:
        p.unlink(missing_ok=True)
    corpus = hostile_postings()
    assert len(corpus) >= 50
    model_ids = [r["posting_id"] for r in corpus if r["_why"].startswith(tuple(FOR_MODEL))]
    model_ids += [r["posting_id"] for r in OWN]
    assert len(model_ids) == len(FOR_MODEL) + len(OWN)
    build(conn, model_ids)
    inserted = insert_hostile(db) + insert_rows(db, lambda: OWN)
    assert inserted == len(corpus) + len(OWN)

    proc = cli("run", "--workflow", str(WF), "--until-idle", "--batch-size", "25",
               "--poll", "0.05", "--json", timeout=300)
    summary = json.loads(proc.stdout)
    assert summary["status"] == "finished"

    # nothing was executed
    assert conn.execute("SELECT count(*) AS n FROM public.canary").fetchone()["n"] == 1
    assert conn.execute("SELECT count(*) AS n FROM public.postings WHERE source = 'hostile'"
                        ).fetchone()["n"] == inserted
    assert not conn.execute("SELECT paused FROM interp.workflows WHERE workflow_id = %s",
                            (WF,)).fetchone()["paused"]
    assert not [p for p in PWNED if p.exists()]
    # every subject ended, and the usual invariants hold
    violations = all_invariants(conn, WF)
    assert violations == {}, violations
    states = {r["status"]: r["n"] for r in conn.execute(
        "SELECT status, count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
        "GROUP BY 1", (WF,))}
    assert sum(states.values()) == inserted
    disabled = sum(1 for r in corpus if not r["enabled"])
    ran = inserted - disabled
    # the SQL actor wrote each enabled subject exactly once
    echo = conn.execute("SELECT count(*) AS n FROM public.hostile_echo").fetchone()["n"]
    oks = conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = %s "
                       "AND step = 3 AND ok", (WF,)).fetchone()["n"]
    assert echo == oks == ran
    # the script saw text, handed it to a program as one argument, and got it back unchanged
    outs = {r["subject_id"]: r["output"] for r in conn.execute(
        "SELECT subject_id, output FROM interp.checkpoints WHERE workflow_id = %s AND step = 2 "
        "AND ok", (WF,))}
    assert len(outs) == ran and all(o["echo_same"] for o in outs.values())
    # `{{ 7*7 }}` stays literal, in the script's render and in the engine's model prompt
    rendered = outs["900900"]["rendered"]
    assert "Title: {{ 7*7 }}" in rendered and "49" not in rendered
    row = conn.execute("SELECT * FROM public.postings WHERE posting_id = 900900").fetchone()
    step = StepDef(WF, 5, "Model", "actor", template="hostile_prompt")
    prompt = render(TEMPLATE, build_context(Subject("900900", dict(row), {}), step))
    assert "{{ 7*7 }}" in prompt and "{% if true %}yes{% endif %}" in prompt
    # NULs were stored as U+FFFD, nowhere as U+0000
    assert conn.execute("SELECT title FROM public.postings WHERE posting_id = %s",
                        (next(r["posting_id"] for r in corpus if r["_why"] == "NUL in title"),)
                        ).fetchone()["title"] == "Engineer\ufffdAdmin"
    # the model step ran over its subjects, each with a checkpoint and its audit
    model = conn.execute("SELECT count(DISTINCT subject_id) AS n, bool_and(model_sha256 IS NOT "
                         "NULL) AS audited FROM interp.checkpoints WHERE workflow_id = %s "
                         "AND step = 5", (WF,)).fetchone()
    assert model["n"] == len(model_ids) and model["audited"]
    record_figure("hostile_postings", postings=inserted, corpus=len(corpus), ran=ran,
                  model_subjects=len(model_ids), ended=sum(states.values()), states=states,
                  violations=0)


# ---------------------------------------------------------------- hostile definitions

def one_gate(sql: str) -> list[dict]:
    return [{"number": 1, "kind": "gate", "gate_sql": sql}]


SCRIPT_OK = {"name": "def_ok", "kind": "script", "target": "tests.actors.faults:ok"}
REFUSED = [
    # (workflow, what, kwargs for make_workflow, expected text)
    (731, "cycle with no exit", dict(
        actors=[SCRIPT_OK], steps=[{"number": 1, "actor": "def_ok"},
                                   {"number": 2, "actor": "def_ok"}],
        transitions=[(1, "*", 2), (2, "*", 1)]), "a cycle with no exit"),
    (732, "gate SQL that cannot run", dict(
        steps=one_gate("SELECT id::text AS subject_id FROM public.no_such_table "
                       "WHERE id = ANY(%(ids)s::bigint[])"),
        transitions=[(1, "RUN", None), (1, "SKIP", None)]), "no_such_table"),
    (733, "transition to a missing step", dict(
        steps=one_gate(GATE_NOT_DONE_SQL), transitions=[(1, "RUN", 99), (1, "SKIP", None)]),
     "missing step 99"),
    (734, "script module that does not exist", dict(
        actors=[{"name": "def_nomod", "kind": "script", "target": "actors.no_such_module:run"}],
        steps=[{"number": 1, "actor": "def_nomod"}], transitions=[(1, "*", None)]),
     "cannot import actors.no_such_module"),
    (735, "os:system", dict(
        actors=[{"name": "def_os", "kind": "script", "target": "os:system"}],
        steps=[{"number": 1, "actor": "def_os"}], transitions=[(1, "*", None)]),
     "outside the allowed module prefixes"),
    (736, "subprocess:run", dict(
        actors=[{"name": "def_subprocess", "kind": "script", "target": "subprocess:run"}],
        steps=[{"number": 1, "actor": "def_subprocess"}], transitions=[(1, "*", None)]),
     "outside the allowed module prefixes"),
    (737, "a look-alike prefix", dict(
        actors=[{"name": "def_lookalike", "kind": "script", "target": "actors_evil.x:run"}],
        steps=[{"number": 1, "actor": "def_lookalike"}], transitions=[(1, "*", None)]),
     "outside the allowed module prefixes"),
    (738, "entry point that cannot run", dict(
        actors=[SCRIPT_OK], steps=[{"number": 1, "actor": "def_ok"}],
        transitions=[(1, "*", None)],
        admit_sql="SELECT id AS subject_id FROM public.items; DROP TABLE public.items"),
     "entry point"),
    (739, "a command where the breaker reads a number", dict(
        actors=[{**SCRIPT_OK, "name": "def_breaker",
                 "params": {"breaker_threshold": "5; DROP TABLE public.items"}}],
        steps=[{"number": 1, "actor": "def_breaker"}], transitions=[(1, "*", None)]),
     "breaker_threshold must be a whole number >= 1"),
    (740, "true where a step's visit cap is read", dict(
        actors=[SCRIPT_OK], steps=[{"number": 1, "actor": "def_ok",
                                    "params": {"max_visits": True}}],
        transitions=[(1, "*", None)]),
     "max_visits must be a whole number >= 1, not true"),
]


def test_hostile_definitions_are_refused_before_the_run(cli, conn):
    add_items(conn, 5)
    for wf, _what, kwargs, _text in REFUSED:
        make_workflow(conn, wf, **kwargs)
    for wf, what, _kwargs, text in REFUSED:
        v = cli("workflow", "validate", str(wf), check=False)
        assert v.returncode == 1, (what, v.stdout, v.stderr)
        assert text in v.stdout, (what, v.stdout)
        assert v.stderr.strip().count("\n") == 0 and v.stderr.startswith("error:"), v.stderr
        r = cli("run", "--workflow", str(wf), "--until-idle", check=False)
        assert r.returncode == 1, (what, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], \
            (what, r.stderr)
        n = conn.execute("SELECT (SELECT count(*) FROM interp.subject_state WHERE workflow_id = "
                         "%(wf)s) + (SELECT count(*) FROM interp.checkpoints WHERE workflow_id "
                         "= %(wf)s) AS n", {"wf": wf}).fetchone()["n"]
        assert n == 0, what
    assert conn.execute("SELECT to_regclass('public.items') AS t").fetchone()["t"] is not None
    record_figure("hostile_definitions_refused", definitions=len(REFUSED),
                  what=[w for _, w, _, _ in REFUSED])


def test_hostile_definitions_processed_inertly(cli, conn):
    add_items(conn, 6)
    add_items(conn, 1, start=1000, title="not admitted")
    conn.execute("UPDATE public.items SET enabled = false WHERE id = 1000")
    # a gate that errors at run time (not when validated with no ids)
    make_workflow(conn, 741, steps=[
        {"number": 1, "kind": "gate", "max_attempts": 2, "params": {"retry_base_s": 0.05},
         "gate_sql": "SELECT id::text AS subject_id, CASE WHEN 1 / (id - id) = 1 THEN 'RUN' "
                     "END AS outcome FROM public.items WHERE id = ANY(%(ids)s::bigint[])"}],
        transitions=[(1, "RUN", None), (1, "SKIP", None)])
    # a gate that answers for subjects outside its wave (and not even admitted)
    make_workflow(conn, 742, steps=one_gate(
        "SELECT id::text AS subject_id, 'SKIP' AS outcome FROM public.items "
        "UNION ALL SELECT '1000', 'RUN' UNION ALL SELECT $$'; DROP TABLE public.items; --$$, "
        "'RUN'"), transitions=[(1, "RUN", None), (1, "SKIP", None)])
    for wf in (741, 742):
        r = cli("run", "--workflow", str(wf), "--until-idle", "--poll", "0.05", "--batch-size",
                "2", check=False)
        assert r.returncode == 0, r.stderr
        assert all_invariants(conn, wf) == {}
    dead = conn.execute("SELECT count(*) AS n, bool_and(last_error LIKE 'gate SQL failed: %%"
                        "division by zero%%') AS why FROM interp.subject_state WHERE "
                        "workflow_id = 741 AND status = 'dead'").fetchone()
    assert dead["n"] == 6 and dead["why"]
    rows = {r["subject_id"]: r["outcome"] for r in conn.execute(
        "SELECT subject_id, outcome FROM interp.checkpoints WHERE workflow_id = 742")}
    assert set(rows) == {str(i) for i in range(1, 7)} and set(rows.values()) == {"SKIP"}
    assert conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 742 "
                        "AND subject_id = '1000'").fetchone()["n"] == 0
    assert conn.execute("SELECT to_regclass('public.items') AS t").fetchone()["t"] is not None
    record_figure("hostile_definitions_inert", definitions=2)


def test_script_prefixes_are_configurable(cli, conn):
    make_workflow(conn, 743, actors=[{"name": "def_ok2", "kind": "script",
                                      "target": "tests.actors.faults:ok"}],
                  steps=[{"number": 1, "actor": "def_ok2"}], transitions=[(1, "*", None)])
    old = os.environ.get("INTERP_SCRIPT_PREFIXES")
    os.environ["INTERP_SCRIPT_PREFIXES"] = "mycompany.actors."
    try:
        v = cli("workflow", "validate", "743", check=False)
    finally:
        if old is None:
            del os.environ["INTERP_SCRIPT_PREFIXES"]
        else:
            os.environ["INTERP_SCRIPT_PREFIXES"] = old
    assert v.returncode == 1 and "outside the allowed module prefixes" in v.stdout
    assert cli("workflow", "validate", "743").returncode == 0
