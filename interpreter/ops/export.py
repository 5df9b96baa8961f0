"""Definitions out of the database: a seed file that loads back to the same
definition, and diagrams (Mermaid, Graphviz dot) drawn from the rows."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..definitions import Workflow
from ..queries import Q

# Sorted keys: the same definition always exports to the same text.
_json_text = partial(json.dumps, sort_keys=True, ensure_ascii=False)


def export_workflow(conn: psycopg.Connection[Any], wf: Workflow) -> str:
    """The definition as an SQL file that loads back to the same definition.

    Every value is quoted by psycopg (``sql.Literal``) for this connection, so
    any text an author wrote, quotes and backslashes included, loads back as it was.
    """
    def statement(query: str, **values: Any) -> str:
        return _statement(conn, query, workflow_id=wf.id, **values)

    # The name goes into a comment line: a line break in it must not end the comment.
    title = " ".join(f"Workflow {wf.id}: {wf.name}".splitlines())
    # No BEGIN/COMMIT in the file: the loader owns the transaction (a seed file may
    # not control it), so a file is applied whole or not at all.
    out = [f"-- {title}", "-- Exported by `interp workflow export`; loading it again changes nothing.",
           "-- Load it with `interp seed load FILE` (or `psql --single-transaction -f FILE`):",
           "-- one transaction, all or nothing.", "",
           statement(Q["export_workflow"], name=wf.name, description=wf.description,
                     subject_table=wf.subject_table, subject_key=wf.subject_key), ""]
    out += [statement(Q["export_model"], name=m.name, source=m.source, n_gpu_layers=m.n_gpu_layers,
                      n_ctx=m.n_ctx, n_threads=m.n_threads, chat_format=m.chat_format,
                      sampling=m.sampling, parallel=m.parallel, api_key_env=m.api_key_env,
                      ca_bundle=m.ca_bundle, prefix_cache_mb=m.prefix_cache_mb)
            for m in sorted(wf.models.values(), key=lambda m: m.name)]
    out += [statement(Q["export_actor"], name=a.name, kind=a.kind, target=a.target, params=a.params)
            for a in sorted(wf.actors.values(), key=lambda a: a.name)]
    out += [statement(Q["export_template"], name=name, version=wf.template_versions.get(name, 1),
                      body=wf.templates[name])
            for name in sorted(wf.templates)]
    out += [statement(Q["export_template"], name=name, version=version, body=body)
            for (name, version), body in sorted(wf.pinned_templates.items())
            if version != wf.template_versions.get(name)]
    out.append("")
    # Replace the steps as a set, so a step removed in the file is removed here too.
    keep = (sql.SQL(", ").join(sql.Literal(n) for n in sorted(wf.steps)) if wf.steps
            else sql.SQL("NULL"))
    out.append(statement(Q["export_drop_other_steps"], keep=keep))
    out += [statement(Q["export_step"], number=s.number, name=s.name, kind=s.kind, actor=s.actor,
                      template=s.template, template_version=s.template_version,
                      gate_sql=s.gate_sql, output_schema=s.output_schema,
                      outcome_field=s.outcome_field, max_attempts=s.max_attempts,
                      timeout_s=float(s.timeout_s), params=s.params)
            for s in sorted(wf.steps.values(), key=lambda s: s.number)]
    out += ["", statement(Q["export_drop_transitions"])]
    out += [statement(Q["export_transition"], from_step=frm, outcome=outcome, to_step=to)
            for frm in sorted(wf.transitions)
            for outcome, to in sorted(wf.transitions[frm].items())]
    out.append("")
    out += [statement(Q["export_entry_point"], name=ep.name, admit_sql=ep.admit_sql,
                      first_step=ep.first_step, enabled=ep.enabled)
            for ep in wf.entry_points]
    out.append("")
    return "\n".join(out)


def _statement(conn: psycopg.Connection[Any], query: str, **values: Any) -> str:
    """An export statement of the registry with its {placeholders} filled: values
    as literals, pieces of SQL composed here as they are (values it has no
    placeholder for are left out)."""
    def literal(value: Any) -> sql.Composable:
        if isinstance(value, sql.Composable):
            return value
        if isinstance(value, dict | list):
            return sql.Literal(Jsonb(value, dumps=_json_text))
        return sql.Literal(value)

    template = sql.SQL(query)  # type: ignore[arg-type]
    return template.format(**{k: literal(v) for k, v in values.items()}).as_string(conn)


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
