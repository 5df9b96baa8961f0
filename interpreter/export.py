"""Definitions out of the database: a seed file that loads back to the same
definition, and diagrams (Mermaid, Graphviz dot) drawn from the rows."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from .db import one
from .definitions import Workflow


def lit(value: Any) -> str:
    """An SQL literal. Definitions are author-written, but quoting is still exact:
    standard_conforming_strings is on, so doubling quotes is the whole rule."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict | list):
        return lit(json.dumps(value, sort_keys=True, ensure_ascii=False)) + "::jsonb"
    return "'" + str(value).replace("'", "''") + "'"


def export_workflow(conn: psycopg.Connection[Any], wf: Workflow) -> str:
    out = [f"-- Workflow {wf.id}: {wf.name}",
           "-- Exported by `interp workflow export`; loading it again changes nothing.",
           "BEGIN;", ""]
    w = one(conn.execute("SELECT * FROM interp.workflows WHERE workflow_id = %s", (wf.id,)))
    out.append(
        "INSERT INTO interp.workflows (workflow_id, name, description, subject_table, "
        "subject_key)\nVALUES ({}, {}, {}, {}, {})\nON CONFLICT (workflow_id) DO UPDATE SET "
        "name = EXCLUDED.name, description = EXCLUDED.description,\n  subject_table = "
        "EXCLUDED.subject_table, subject_key = EXCLUDED.subject_key;".format(
            wf.id, lit(w["name"]), lit(w["description"]), lit(w["subject_table"]),
            lit(w["subject_key"])))
    out.append("")
    for m in sorted(wf.models.values(), key=lambda m: m.name):
        out.append(
            "INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, "
            f"chat_format, sampling)\nVALUES ({lit(m.name)}, {lit(m.source)}, {m.n_gpu_layers}, {m.n_ctx}, {lit(m.n_threads)}, {lit(m.chat_format)}, {lit(m.sampling)})\nON CONFLICT (name) DO "
            "UPDATE SET source = EXCLUDED.source, n_gpu_layers = EXCLUDED.n_gpu_layers,\n  "
            "n_ctx = EXCLUDED.n_ctx, n_threads = EXCLUDED.n_threads, chat_format = "
            "EXCLUDED.chat_format, sampling = EXCLUDED.sampling;")
    for a in sorted(wf.actors.values(), key=lambda a: a.name):
        out.append(
            f"INSERT INTO interp.actors (name, kind, target, params)\nVALUES ({lit(a.name)}, {lit(a.kind)}, {lit(a.target)}, {lit(a.params)})\n"
            "ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, "
            "params = EXCLUDED.params;")
    for name in sorted(wf.templates):
        out.append(
            f"INSERT INTO interp.prompt_templates (name, version, body)\nVALUES ({lit(name)}, {wf.template_versions.get(name, 1)}, {lit(wf.templates[name])})\n"
            "ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;")
    out.append("")
    # Replace the steps as a set, so a step removed in the file is removed here too.
    keep = ", ".join(str(n) for n in sorted(wf.steps)) or "NULL"
    out.append(f"DELETE FROM interp.steps WHERE workflow_id = {wf.id} "
               f"AND execution_order NOT IN ({keep});")
    for s in sorted(wf.steps.values(), key=lambda s: s.number):
        out.append(
            "INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, "
            "gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)\n"
            f"VALUES ({wf.id}, {s.number}, {lit(s.name)}, {lit(s.kind)}, {lit(s.actor)}, {lit(s.template)}, {lit(s.gate_sql)}, {lit(s.output_schema)}, {lit(s.outcome_field)}, {s.max_attempts}, {lit(float(s.timeout_s))}, {lit(s.params)})\n"
            "ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, "
            "kind = EXCLUDED.kind,\n  actor = EXCLUDED.actor, template = EXCLUDED.template, "
            "gate_sql = EXCLUDED.gate_sql,\n  output_schema = EXCLUDED.output_schema, "
            "outcome_field = EXCLUDED.outcome_field,\n  max_attempts = EXCLUDED.max_attempts, "
            "timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;")
    out.append("")
    out.append(f"DELETE FROM interp.step_transitions WHERE workflow_id = {wf.id};")
    for frm in sorted(wf.transitions):
        for outcome, to in sorted(wf.transitions[frm].items()):
            out.append("INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, "
                       f"to_step) VALUES ({wf.id}, {frm}, {lit(outcome)}, {lit(to)});")
    out.append("")
    for ep in wf.entry_points:
        out.append(
            "INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step, enabled)\n"
            f"VALUES ({wf.id}, {lit(ep.name)}, {lit(ep.admit_sql)}, {ep.first_step}, {lit(ep.enabled)})\nON CONFLICT (workflow_id, name) DO UPDATE SET "
            "admit_sql = EXCLUDED.admit_sql,\n  first_step = EXCLUDED.first_step, enabled = "
            "EXCLUDED.enabled;")
    out += ["", "COMMIT;", ""]
    return "\n".join(out)


def _node_label(wf: Workflow, n: int) -> str:
    s = wf.steps[n]
    actor = wf.actors.get(s.actor or "")
    if actor is None:
        kind = s.kind
    else:
        kind = f"{actor.kind}: {actor.name if actor.kind == 'sql' else actor.target}"
    return f"{n}. {s.name} ({kind})"


def mermaid(wf: Workflow) -> str:
    def esc(text: str) -> str:
        return text.replace('"', "#quot;")

    lines = ["flowchart TD"]
    for i, ep in enumerate(wf.entry_points):
        lines.append(f'    EP{i}(["entry: {esc(ep.name)}"]) --> S{ep.first_step}')
    for n in sorted(wf.steps):
        shape = ('{{"%s"}}' if wf.steps[n].kind == "gate" else '["%s"]') % esc(_node_label(wf, n))
        lines.append(f"    S{n}{shape}")
    lines.append("    END([end])")
    for frm in sorted(wf.transitions):
        for outcome, to in sorted(wf.transitions[frm].items()):
            target = f"S{to}" if to is not None else "END"
            lines.append(f"    S{frm} -->|{esc(outcome)}| {target}")
    return "\n".join(lines) + "\n"


def dot(wf: Workflow) -> str:
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph workflow_{wf.id} {{", "  rankdir=TB;",
             '  END [shape=doublecircle label="end"];']
    for n in sorted(wf.steps):
        shape = "diamond" if wf.steps[n].kind == "gate" else "box"
        lines.append(f"  S{n} [shape={shape} label={q(_node_label(wf, n))}];")
    for frm in sorted(wf.transitions):
        for outcome, to in sorted(wf.transitions[frm].items()):
            target = f"S{to}" if to is not None else "END"
            lines.append(f"  S{frm} -> {target} [label={q(outcome)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
