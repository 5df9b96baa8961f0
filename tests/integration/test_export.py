"""`interp workflow export` writes a file that loads back to the same definition,
whatever the author wrote: quotes, backslashes, line breaks, braces, percent
signs, non-ASCII text, negative numbers, NULLs and nested JSON."""

from __future__ import annotations

import dataclasses
import json

from interpreter.definitions import load_workflow

WF = 77
AWKWARD = "O'Brien \\d+ \"quoted\" {braces} 100%% ünïcode ✓"
# A line break in the name: the export's header comment must not end early and
# turn the rest of the name into a statement.
NAME = "Awkward\nDROP TABLE public.canary; --"


def make_awkward_workflow(conn) -> None:
    conn.execute("CREATE TABLE public.canary (x int)")
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, description, subject_table, "
                 "subject_key) VALUES (%s, %s, %s, 'public.items', 'id')", (WF, NAME, AWKWARD))
    conn.execute("INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, "
                 "chat_format, sampling, prefix_cache_mb) "
                 "VALUES ('awk_model', %s, -1, 4096, NULL, 'chatml', %s, 0)",
                 ("C:\\models\\it's.gguf", json.dumps({"temperature": 0.5, "stop": ["\n", "\\"]})))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('awk_model_actor', 'model', 'awk_model', %s), "
                 "('awk_sql', 'sql', %s, '{}')",
                 (json.dumps({"note": AWKWARD, "nested": {"b": [1, None, True], "a": -2.5}}),
                  "SELECT b->>'subject_id' AS subject_id, E'\\\\t' AS outcome\n"
                  "  FROM jsonb_array_elements(%(batch)s) AS b -- it's {not} a placeholder"))
    conn.execute("INSERT INTO interp.prompt_templates (name, version, body) VALUES "
                 "('awk_tpl', 3, %s)", ("{{ subject.title }} \\n it's {% raw %}{x}{% endraw %}",))
    steps = [(1, "gate: it's", "gate", None, None, "SELECT unnest(%(ids)s::text[]) AS subject_id,"
              " 'RUN' AS outcome -- 50%", None, None, {}),
             (2, AWKWARD, "actor", "awk_model_actor", "awk_tpl", None,
              {"type": "object", "properties": {"t": {"type": "string", "pattern": "^\\w+$"}}},
              "t", {"max_tokens": 64}),
             (3, "sql", "actor", "awk_sql", None, None, None, None, {"x": "y'z"})]
    for number, name, kind, actor, template, gate_sql, schema, field, params in steps:
        conn.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, "
                     "template, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, "
                     "params) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 4, 12.5, %s)",
                     (WF, number, name, kind, actor, template, gate_sql,
                      json.dumps(schema) if schema is not None else None, field,
                      json.dumps(params)))
    for frm, outcome, to in [(1, "RUN", 2), (1, "SKIP", None), (2, "*", 3), (3, "DONE", None)]:
        conn.execute("INSERT INTO interp.step_transitions VALUES (%s, %s, %s, %s)",
                     (WF, frm, outcome, to))
    conn.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step, "
                 "enabled) VALUES (%s, %s, %s, 1, false)",
                 (WF, "it's \\ all",
                  "SELECT id AS subject_id FROM public.items WHERE note = 'a\\b'"))


def drop_definition(conn) -> None:
    conn.execute("DELETE FROM interp.workflows WHERE workflow_id = %s", (WF,))
    conn.execute("DELETE FROM interp.actors WHERE name LIKE 'awk%'")
    conn.execute("DELETE FROM interp.models WHERE name LIKE 'awk%'")
    conn.execute("DELETE FROM interp.prompt_templates WHERE name LIKE 'awk%'")


def test_export_of_awkward_values_loads_back_to_the_same_definition(cli, conn, tmp_path):
    make_awkward_workflow(conn)
    before = load_workflow(conn, WF)
    exported = cli("workflow", "export", str(WF)).stdout
    assert exported.startswith("-- Workflow 77: Awkward DROP TABLE public.canary; --\n")

    drop_definition(conn)
    path = tmp_path / "export.sql"
    path.write_text(exported, encoding="utf-8")
    cli("seed", "load", str(path))

    after = load_workflow(conn, WF)
    # A load may bump the definition's version number; the definition itself is equal.
    assert dataclasses.replace(after, version=before.version) == before
    assert after.name == NAME and after.description == AWKWARD
    assert after.models["awk_model"].n_gpu_layers == -1
    # 0 (the prefix cache off) is not NULL (the default budget).
    assert after.models["awk_model"].prefix_cache_mb == 0
    assert conn.execute("SELECT to_regclass('public.canary') AS t").fetchone()["t"] is not None
    assert cli("workflow", "export", str(WF)).stdout == exported
