"""The one registry of actor kinds: what a kind is, which lane runs it, how its
target is checked and how a wave of it is computed.

The lanes, `validate` and the definitions ask this table; none of them switches
on a kind's name. The built-in kinds are ``model`` (declared here: the model
lane runs it, with its model, template and sampling), and ``sql`` and
``script`` (registered by :mod:`interpreter.cheap_kinds`, which holds how they
run). A new kind is one module that calls :func:`register`, and one migration
that adds its name to the ``interp.actors.kind`` CHECK (docs/architecture.md,
"Where to add things").

A kind of the cheap lane computes a wave in one of two ways:

- ``run_inline(conn, wave, target)``: inside the wave's transaction (claim,
  compute and commit in one), reading what it needs itself (a SQL actor);
- ``run_wave(actor, step, subjects)``: over the claimed subjects and their rows,
  either inside that transaction (when ``inline(params)`` says so) or on a
  leased wave that holds no connection while it runs (a script).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from .actor_api import StepResult, Subject
from .errors import DefinitionError, InvalidValue

#: The lanes a kind may run on.
MODEL_LANE = "model"
CHEAP_LANE = "cheap"

# (conn, the waves.InlineWave, the actor's target) -> one result per subject.
InlineRun = Callable[[psycopg.Connection[Any], Any, str], list[StepResult]]
# (the definitions.ActorDef, the definitions.StepDef, the subjects) -> one result each.
WaveRun = Callable[[Any, Any, list[Subject]], list[StepResult]]


def no_problems(actor: str, target: str) -> list[str]:
    return []


def never_inline(params: Mapping[str, Any]) -> bool:
    return False


def no_step_problems(wf: Any, step: Any, actor: Any) -> list[str]:
    return []


def model_step_problems(wf: Any, step: Any, actor: Any) -> list[str]:
    """A model step needs its model row and its template (the version it pins, if it
    pins one): the run would fail every wave of it otherwise."""
    out: list[str] = []
    if actor.target not in wf.models:
        out.append(f"model {actor.target!r} of actor {actor.name!r} does not exist")
    if not step.template:
        out.append("a model step needs a template")
    elif step.template not in wf.templates:
        out.append(f"template {step.template!r} does not exist")
    elif wf.template_body(step) is None:
        out.append(f"template {step.template!r} is pinned to version "
                   f"{step.template_version}, which does not exist")
    return out


@dataclass(frozen=True)
class ActorKind:
    """One kind of actor. `check(actor, target)` lists what is wrong with an actor's
    target, and `check_step(workflow, step, actor)` what is wrong with a step that
    uses it (what it needs beside the target: a model step's model row and template);
    each a sentence `validate` prefixes with the step. `inline(params)` says whether a
    `run_wave` kind computes inside the wave's transaction for these merged params."""

    name: str
    lane: str = CHEAP_LANE
    check: Callable[[str, str], list[str]] = no_problems
    # (the definitions.Workflow, its StepDef, the step's ActorDef) -> problems.
    check_step: Callable[[Any, Any, Any], list[str]] = no_step_problems
    inline: Callable[[Mapping[str, Any]], bool] = never_inline
    run_inline: InlineRun | None = None
    run_wave: WaveRun | None = None

    def __post_init__(self) -> None:
        if self.lane not in (MODEL_LANE, CHEAP_LANE):
            raise InvalidValue(f"actor kind {self.name!r}: unknown lane {self.lane!r}")
        if self.lane == CHEAP_LANE and (self.run_inline is None) == (self.run_wave is None):
            raise InvalidValue(f"actor kind {self.name!r}: give run_inline or run_wave")

    def runs_inline(self, params: Mapping[str, Any]) -> bool:
        """A wave of it is claimed, computed and committed in one transaction."""
        return self.run_inline is not None or self.inline(params)


KINDS: dict[str, ActorKind] = {
    "model": ActorKind("model", lane=MODEL_LANE, check_step=model_step_problems)}


def register(kind: ActorKind) -> ActorKind:
    """Adds (or replaces) a kind; returns it."""
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Removes a kind (tests that register their own)."""
    KINDS.pop(name, None)


def kind_of(name: str) -> ActorKind:
    try:
        return KINDS[name]
    except KeyError:
        raise DefinitionError(f"unknown actor kind {name!r} (known: "
                              f"{', '.join(sorted(KINDS))})") from None


def is_model_kind(name: str) -> bool:
    """The model lane runs it (False for a kind not registered)."""
    kind = KINDS.get(name)
    return kind is not None and kind.lane == MODEL_LANE


__all__ = ["CHEAP_LANE", "KINDS", "MODEL_LANE", "ActorKind", "InlineRun", "WaveRun",
           "is_model_kind", "kind_of", "register", "unregister"]
