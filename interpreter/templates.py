"""Prompt templates: Jinja2 in a sandbox, with subject data as values only.

A template body is author-written source (a row in ``interp.prompt_templates``);
subject text is data. It is only ever passed in the render context, never
concatenated into template source, so a posting that contains ``{{ 7*7 }}`` or
``{% for %}`` comes out literally.

The context for a subject at a step:

- every column of the subject row, at top level and under ``subject``;
- ``out``: earlier steps' outputs by step number (an int): ``out[2].title``;
- ``step``: ``{"number": ..., "name": ..., "visit": ...}``, visit being which pass
  through this step the subject is on (1, then 2 when a loop brings it back...).

The names ``subject``, ``out`` and ``step`` win over subject columns of the same
name (those columns stay reachable as ``subject.out`` etc.).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from .actor_api import Subject
from .definitions import StepDef
from .errors import InternalError

RESERVED = ("subject", "out", "step")


class TemplateRenderError(InternalError):
    """A template failed to compile or render for one subject (a one-line message)."""


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                            keep_trailing_newline=True)


@lru_cache(maxsize=256)
def _compile(body: str) -> Any:
    return _ENV.from_string(body)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if isinstance(exc, TemplateSyntaxError) and exc.lineno:
        return f"syntax error at line {exc.lineno}: {text}"
    return f"{exc.__class__.__name__}: {text}"


def render(body: str, context: dict[str, Any]) -> str:
    """Render a template body with context; raises TemplateRenderError."""
    try:
        return _compile(body).render(context)
    except TemplateError as exc:
        raise TemplateRenderError(_describe(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a filter on bad data (TypeError...) fails one subject
        raise TemplateRenderError(_describe(exc)) from exc


def outputs_by_step(outputs: dict[str, Any]) -> dict[int, Any]:
    result: dict[int, Any] = {}
    for key, value in (outputs or {}).items():
        try:
            result[int(key)] = value
        except (TypeError, ValueError):
            continue
    return result


def build_context(subject: Subject, step: StepDef) -> dict[str, Any]:
    row = dict(subject.row or {})
    context: dict[str, Any] = dict(row)
    context["subject"] = row
    context["out"] = outputs_by_step(subject.outputs)
    context["step"] = {"number": step.number, "name": step.name,
                       "visit": subject.visit_of_step}
    return context


# ---------------------------------------------------------------- static checks

def _const_key(node: nodes.Node) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    return None


def _schema_fields(schema: dict[str, Any] | None) -> set[str] | None:
    """Field names a step's output can have, or None when the schema does not say."""
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties")
    if not isinstance(props, dict):
        return None
    if schema.get("additionalProperties", True) is not False and "additionalProperties" in schema:
        return None   # additionalProperties given as a schema: anything goes
    return set(props)


DICT_METHODS = frozenset({"get", "items", "keys", "values"})


def template_problems(body: str, subject_columns: set[str],
                      available_steps: dict[int, dict[str, Any] | None]) -> list[str]:
    """What in a template cannot exist at its step (for ``interp workflow validate``).

    ``available_steps`` maps each step whose output can exist here to its output
    JSON schema (None when it has none). Reports syntax errors, unknown
    top-level names, ``subject.X`` for an unknown column, ``out[N]`` for a step
    not available, and ``out[N].field`` / ``out[N]["field"]`` for a field that
    step's schema does not have.
    """
    try:
        ast = _ENV.parse(body)
    except TemplateSyntaxError as exc:
        return [f"template {_describe(exc)}"]
    problems: list[str] = []
    known = set(subject_columns) | set(RESERVED) | set(_ENV.globals)
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in known:
            problems.append(f"unknown variable {name!r} (not a subject column, and not "
                            f"one of {', '.join(RESERVED)})")

    def seen(msg: str) -> None:
        if msg not in problems:
            problems.append(msg)

    # `out[4].get('reason', '')` calls a dict method; it names no field.
    method_calls = {id(call.node) for call in ast.find_all(nodes.Call)
                    if isinstance(call.node, nodes.Getattr) and call.node.attr in DICT_METHODS}
    # Field access on subject / out[N]: Getattr(node=..., attr) or Getitem(node=..., arg=Const)
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in method_calls:
            continue
        target = node.node  # type: ignore[attr-defined]
        field = node.attr if isinstance(node, nodes.Getattr) else _const_key(
            node.arg)  # type: ignore[attr-defined]
        if isinstance(target, nodes.Name) and target.ctx == "load":
            if target.name == "subject" and isinstance(field, str) \
                    and field not in subject_columns:
                seen(f"subject.{field}: the subject has no column {field!r}")
            if target.name == "out" and isinstance(node, nodes.Getitem):
                if isinstance(field, str) and field.isdigit():
                    field = int(field)
                if isinstance(field, int) and field not in available_steps:
                    steps = ", ".join(str(n) for n in sorted(available_steps)) or "none"
                    seen(f"out[{field}]: step {field} cannot have run before this step "
                         f"(earlier steps: {steps})")
                elif field is not None and not isinstance(field, int):
                    seen(f"out[{field!r}]: out is keyed by step number")
        # out[N].field
        if isinstance(target, nodes.Getitem) and isinstance(target.node, nodes.Name) \
                and target.node.name == "out" and isinstance(field, str):
            n = _const_key(target.arg)
            if isinstance(n, str) and n.isdigit():
                n = int(n)
            if isinstance(n, int) and n in available_steps:
                fields = _schema_fields(available_steps[n])
                if fields is not None and field not in fields:
                    seen(f"out[{n}].{field}: step {n}'s output schema has no field "
                         f"{field!r} (it has: {', '.join(sorted(fields)) or 'none'})")
    return problems
