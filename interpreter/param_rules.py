"""The parameters the engine itself reads from a definition, and what each may be.

A step's, an actor's or a model row's JSON may hold any key (a script actor
receives its params as they are), but the keys the engine reads are turned into
numbers and choices while a run is under way: by the retry backoff in a
commit, by the breaker, by the claim of a wave, by a model's sampler. A value
there that is not what the engine needs would surface mid-run, far from the
row that holds it. `interp workflow validate` (and so every `interp run`, and
every reload of an edited definition) checks them here first and names the row,
the key and what it must be.

Pure: no I/O. Each rule says where the engine reads its key, because a key only
means something there (the breaker reads the actor's params, the retry backoff
the step's own, a model step the two merged).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], bool]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def at_least(low: float, whole: bool = False) -> Check:
    kind = _integer if whole else _number
    return lambda v: kind(v) and v >= low


def above(low: float) -> Check:
    return lambda v: _number(v) and v > low


def between(low: float, high: float, whole: bool = False) -> Check:
    kind = _integer if whole else _number
    return lambda v: kind(v) and low <= v <= high


def one_of(*choices: str) -> Check:
    return lambda v: v in choices


def text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    check: Check
    must_be: str            # how the error names what the value must be
    null_ok: bool = False   # JSON null reads as "not set" where the engine reads it


# Read from the step's own params (interp.steps.params).
STEP_RULES: dict[str, Rule] = {
    "retry_base_s": Rule(at_least(0), "a number of seconds >= 0"),
    "retry_max_s": Rule(at_least(0), "a number of seconds >= 0"),
    "max_visits": Rule(at_least(1, whole=True), "a whole number >= 1"),
    "max_output_bytes": Rule(at_least(1, whole=True), "a whole number of bytes >= 1"),
    "batch_size": Rule(at_least(1, whole=True), "a whole number >= 1"),
    "default_outcome": Rule(text, "a non-empty outcome label"),
    "inline": Rule(boolean, "true or false"),     # the step's or its actor's
}

# Read from the actor's params (interp.actors.params): its breaker and limits.
ACTOR_RULES: dict[str, Rule] = {
    "breaker_threshold": Rule(at_least(1, whole=True), "a whole number >= 1"),
    "breaker_window": Rule(at_least(1, whole=True), "a whole number >= 1"),
    "breaker_cooldown_s": Rule(at_least(0), "a number of seconds >= 0"),
    "rate_per_s": Rule(above(0), "a number > 0", null_ok=True),
    "rate_burst": Rule(above(0), "a number > 0", null_ok=True),
    "max_concurrency": Rule(above(0), "a number > 0", null_ok=True),
    "inline": Rule(boolean, "true or false"),
}

# Read by a model step from its actor's params overlaid by its own (and
# `sampling`, a JSON object checked with SAMPLING_RULES).
MODEL_STEP_RULES: dict[str, Rule] = {
    "max_tokens": Rule(at_least(1, whole=True), "a whole number of tokens >= 1"),
    "reask": Rule(at_least(0, whole=True), "a whole number >= 0"),
    "on_overflow": Rule(one_of("truncate", "refuse"), "'truncate' or 'refuse'"),
    "system": Rule(lambda v: isinstance(v, str), "a string", null_ok=True),
}

# A model row's sampling, overlaid by its actor's and its step's `sampling`.
SAMPLING_RULES: dict[str, Rule] = {
    "temperature": Rule(at_least(0), "a number >= 0"),
    "top_p": Rule(between(0, 1), "a number from 0 to 1"),
    "min_p": Rule(between(0, 1), "a number from 0 to 1"),
    "typical_p": Rule(between(0, 1), "a number from 0 to 1"),
    "top_k": Rule(at_least(0, whole=True), "a whole number >= 0"),
    "repeat_penalty": Rule(above(0), "a number > 0"),
    "presence_penalty": Rule(_number, "a number"),
    "frequency_penalty": Rule(_number, "a number"),
    "seed": Rule(between(0, 2**32 - 1, whole=True), "a whole number from 0 to 4294967295"),
    "lookup_tokens": Rule(between(0, 16, whole=True), "a whole number from 0 to 16",
                          null_ok=True),
    "jump_forward": Rule(boolean, "true or false", null_ok=True),
}


def problems(where: str, values: dict[str, Any] | None, rules: dict[str, Rule]) -> list[str]:
    """One line per key of `values` that a rule refuses; `where` names the row."""
    out = []
    for key, value in (values or {}).items():
        rule = rules.get(key)
        if rule is None or (value is None and rule.null_ok):
            continue
        if not rule.check(value):
            out.append(f"{where}: {key} must be {rule.must_be}, not {_shown(value)}")
    return out


def sampling_problems(where: str, sampling: Any) -> list[str]:
    """A `sampling` object's problems (None: there is none, which is fine)."""
    if sampling is None:
        return []
    if not isinstance(sampling, dict):
        return [f"{where} must be a JSON object, not {_shown(sampling)}"]
    return problems(where, sampling, SAMPLING_RULES)


def _shown(value: Any) -> str:
    """The value as JSON (what the author wrote in the row), cut short."""
    try:
        shown = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
