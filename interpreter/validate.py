"""`interp workflow validate`: every problem of a definition at once.

The same check runs before every `interp run`, so a broken definition is
refused with a clear error instead of failing subjects one by one. Warnings
(`validation_warnings`) are reported apart and never refuse a run.
"""

from __future__ import annotations

from typing import Any

import psycopg
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from psycopg import sql

from .actor_kinds import KINDS, is_model_kind, kind_of
from .cheap_kinds import SCRIPT, SQL
from .definitions import ModelDef, Workflow
from .errors import first_line
from .llm.pool import backend_kind
from .param_rules import ACTOR_RULES, MODEL_STEP_RULES, STEP_RULES, problems, sampling_problems
from .queries import Q
from .templates import RESERVED, template_problems

BUILT_IN_KINDS = (SQL, SCRIPT)  # registered by cheap_kinds, checked through actor_kinds


def validate_workflow(conn: psycopg.Connection[Any], wf: Workflow) -> list[str]:
    """The definition's problems: any one of them refuses `interp run`."""
    problems: list[str] = []
    problems += _structure(wf)
    problems += _actors(wf)
    problems += _params(wf)
    problems += _model_sources(wf)
    problems += _schemas(wf)
    problems += _reachability(wf)
    problems += _queries(conn, wf)
    problems += _templates(conn, wf)
    return problems


def validation_warnings(conn: psycopg.Connection[Any], wf: Workflow) -> list[str]:
    """What is legal but likely not what the author meant. Warnings never refuse a
    run; `interp workflow validate` prints them after the problems."""
    return _shadowed_columns(conn, wf) + _key_warnings(wf) + environment_problems(wf)


def environment_problems(wf: Workflow) -> list[str]:
    """What this process's environment lacks for the workflow's models (a server
    key's environment variable, named, never its value; a CA bundle file), as
    each model's backend kind says. They refuse `interp run` here; `interp
    workflow validate` shows them as warnings, since it may run where the
    workers' secrets are not."""
    return [problem for model in _used_model_rows(wf)
            for problem in backend_kind(model).environment(model)]


def _key_warnings(wf: Workflow) -> list[str]:
    return [warning for model in _used_model_rows(wf)
            for warning in backend_kind(model).warnings(model)]


def _used_models(wf: Workflow) -> list[str]:
    """The models the workflow's steps use, by name."""
    return sorted({actor.target for step in wf.steps.values()
                   if (actor := wf.actors.get(step.actor or "")) is not None
                   and is_model_kind(actor.kind) and actor.target in wf.models})


def _used_model_rows(wf: Workflow) -> list[ModelDef]:
    return [wf.models[name] for name in _used_models(wf)]


def _shadowed_columns(conn: psycopg.Connection[Any], wf: Workflow) -> list[str]:
    """Subject columns that a template cannot reach by their bare name: the context
    names (subject, out, step) win over columns of the same name."""
    if not any(step.template for step in wf.steps.values()):
        return []
    columns = _subject_columns(conn, wf)
    return [f"subject column {name!r} is shadowed in templates by the context name "
            f"{name!r}: write subject.{name} for the column"
            for name in RESERVED if name in columns]


def _subject_columns(conn: psycopg.Connection[Any], wf: Workflow) -> set[str]:
    return {r["attname"] for r in conn.execute(Q["validate_subject_columns"],
                                               {"table": wf.subject_table})}


def _structure(wf: Workflow) -> list[str]:
    out: list[str] = []
    if not wf.steps:
        out.append("the workflow has no steps")
    if not wf.entry_points:
        out.append("the workflow has no entry point")
    for ep in wf.entry_points:
        if ep.first_step not in wf.steps:
            out.append(f"entry point {ep.name!r} starts at missing step {ep.first_step}")
    for number, step in sorted(wf.steps.items()):
        table = wf.transitions.get(number, {})
        if not table:
            out.append(f"step {number} ({step.name}) has no transitions "
                       "(add one to NULL to end there)")
        for outcome, target in sorted(table.items()):
            if target is not None and target not in wf.steps:
                out.append(f"step {number} ({step.name}): transition {outcome} goes to "
                           f"missing step {target}")
        if step.kind == "gate":
            if not (step.gate_sql or "").strip():
                out.append(f"step {number} ({step.name}) is a gate without SQL")
            for needed in ("RUN", "SKIP"):
                if needed not in table and "*" not in table:
                    out.append(f"gate step {number} ({step.name}) has no transition for "
                               f"{needed}")
    return out


def _actors(wf: Workflow) -> list[str]:
    out: list[str] = []
    for number, step in sorted(wf.steps.items()):
        if step.kind != "actor":
            continue
        actor = wf.actors.get(step.actor or "")
        if actor is None:
            out.append(f"step {number} ({step.name}): actor {step.actor!r} does not exist")
            continue
        if actor.kind not in KINDS:
            out.append(f"step {number} ({step.name}): actor {actor.name!r} has unknown kind "
                       f"{actor.kind!r}")
        else:
            kind = kind_of(actor.kind)
            out += [f"step {number} ({step.name}): {problem}"
                    for problem in (kind.check(actor.name, actor.target)
                                    + kind.check_step(wf, step, actor))]
    return out


def _params(wf: Workflow) -> list[str]:
    """The parameters the engine reads, where it reads them (param_rules)."""
    out: list[str] = []
    for name, model in sorted(wf.models.items()):
        out += sampling_problems(f"model {name!r} sampling", model.sampling)
    for name, actor in sorted(wf.actors.items()):
        out += problems(f"actor {name!r} params", actor.params, ACTOR_RULES)
        if is_model_kind(actor.kind):    # each of its steps reads these
            out += problems(f"actor {name!r} params", actor.params, MODEL_STEP_RULES)
            out += sampling_problems(f"actor {name!r} params.sampling",
                                     actor.params.get("sampling"))
    for number, step in sorted(wf.steps.items()):
        where = f"step {number} ({step.name}) params"
        out += problems(where, step.params, STEP_RULES)
        if wf.model_of(step) is not None:
            out += problems(where, step.params, MODEL_STEP_RULES)
            out += sampling_problems(f"{where}.sampling", step.params.get("sampling"))
    return out


def _model_sources(wf: Workflow) -> list[str]:
    """What each used model's backend kind finds wrong with its row (a remote row
    whose servers are badly named, or whose URL carries a secret): a run would fail
    its every wave otherwise. Checked once per model; no server is contacted."""
    return [problem for model in _used_model_rows(wf)
            for problem in backend_kind(model).problems(model)]


def _schemas(wf: Workflow) -> list[str]:
    out: list[str] = []
    for number, step in sorted(wf.steps.items()):
        if step.output_schema is None:
            continue
        try:
            Draft202012Validator.check_schema(step.output_schema)
        except SchemaError as exc:
            out.append(f"step {number} ({step.name}): output schema is not valid JSON Schema: "
                       f"{exc.message}")
    return out


def _reachability(wf: Workflow) -> list[str]:
    out: list[str] = []
    starts = {ep.first_step for ep in wf.entry_points if ep.first_step in wf.steps}
    seen: set[int] = set()
    todo = list(starts)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(t for t in wf.transitions.get(n, {}).values()
                    if t is not None and t in wf.steps)
    for number, step in sorted(wf.steps.items()):
        if number not in seen and starts:
            out.append(f"step {number} ({step.name}) is unreachable from any entry point")
    # Steps from which the end can never be reached: a cycle with no exit.
    can_end = {n for n, t in wf.transitions.items() if None in t.values()}
    changed = True
    while changed:
        changed = False
        for n, table in wf.transitions.items():
            if n not in can_end and any(t in can_end for t in table.values() if t is not None):
                can_end.add(n)
                changed = True
    for number in sorted(seen):
        if number not in can_end and wf.transitions.get(number):
            out.append(f"step {number} ({wf.steps[number].name}) can never reach the end "
                       "(a cycle with no exit)")
    return out


def _queries(conn: psycopg.Connection[Any], wf: Workflow) -> list[str]:
    """Entry points and gates must at least run: each is tried in a transaction that
    is rolled back, so nothing changes. An entry point is tried with the very
    statement a run admits with (limit 0); a gate with no subjects (an empty id list)."""
    out: list[str] = []
    for ep in wf.entry_points:
        err = _try(conn, ep.admission_statement(), ep.admission_params(wf.id, 0))
        if err:
            out.append(f"entry point {ep.name!r}: query does not run: {err}")
    for number, step in sorted(wf.steps.items()):
        if step.kind == "gate" and (step.gate_sql or "").strip():
            err = _try(conn, step.gate_sql or "", {"ids": [], "workflow_id": wf.id,
                                                    "step": number})
            if err:
                out.append(f"gate step {number} ({step.name}): SQL does not run: {err}")
    return out


def _try(conn: psycopg.Connection[Any], query: str | sql.Composed,
         params: dict[str, Any]) -> str | None:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(query, params)
    except (psycopg.Error, IndexError, KeyError, ValueError, TypeError) as exc:
        return first_line(exc)
    return None


def _templates(conn: psycopg.Connection[Any], wf: Workflow) -> list[str]:
    columns = _subject_columns(conn, wf)
    out: list[str] = []
    before = _steps_before(wf)
    for number, step in sorted(wf.steps.items()):
        body = wf.template_body(step)
        if body is None:
            continue
        available = {n: wf.steps[n].output_schema for n in before.get(number, set())}
        for p in template_problems(body, columns, available):
            out.append(f"step {number} ({step.name}): template {step.template!r}: {p}")
    return out


def _steps_before(wf: Workflow) -> dict[int, set[int]]:
    """For each step, the steps a subject may have passed before it gets there (every
    step with a path to it). A subject may arrive by several paths; an output is
    'available' when some path passes it (a template guards optional outputs with
    `out.get(N)`)."""
    preds: dict[int, set[int]] = {n: set() for n in wf.steps}
    for n, table in wf.transitions.items():
        for t in table.values():
            if t is not None and t in preds:
                preds[t].add(n)
    result: dict[int, set[int]] = {}
    for n in wf.steps:
        seen: set[int] = set()
        todo = list(preds[n])
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            todo.extend(preds.get(p, ()))
        result[n] = seen
    return result
