"""The rules for the parameters the engine reads (interpreter.param_rules)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import interpreter
from interpreter.param_rules import (
    ACTOR_RULES,
    MODEL_STEP_RULES,
    SAMPLING_RULES,
    STEP_RULES,
    problems,
    sampling_problems,
)

KNOWN = {**STEP_RULES, **ACTOR_RULES, **MODEL_STEP_RULES, **SAMPLING_RULES}


def test_every_key_the_engine_reads_has_a_rule():
    # A new params.get("...") without a rule would be read unchecked mid-run.
    read: set[str] = set()
    for path in Path(interpreter.__file__).parent.rglob("*.py"):
        text = path.read_text()
        read |= set(re.findall(r"\b(?:params|sampling)\.get\(\s*\"(\w+)\"", text))
        read |= set(re.findall(r"_positive\(actor, params, \"(\w+)\"\)", text))
    read -= {"host", "port", "dbname"}         # db.py: a DSN's parts, not a definition's
    read.discard("sampling")                   # a nested object: SAMPLING_RULES
    assert read - set(KNOWN) == set()


def test_a_boolean_is_not_a_number_and_infinity_is_not_finite():
    for bad in (True, math.inf, math.nan, "1", [1]):
        assert problems("step 1", {"retry_base_s": bad}, STEP_RULES), bad
    assert problems("step 1", {"retry_base_s": 0}, STEP_RULES) == []
    assert problems("step 1", {"retry_base_s": 2.5}, STEP_RULES) == []


def test_whole_numbers_refuse_fractions_and_numbers_in_strings():
    assert problems("s", {"max_tokens": 64.0}, MODEL_STEP_RULES)
    assert problems("s", {"max_tokens": "64"}, MODEL_STEP_RULES)
    assert problems("s", {"max_tokens": 64}, MODEL_STEP_RULES) == []


def test_null_is_not_set_only_where_the_engine_reads_it_so():
    assert problems("a", {"rate_per_s": None, "max_concurrency": None}, ACTOR_RULES) == []
    assert problems("a", {"breaker_threshold": None}, ACTOR_RULES)
    assert problems("s", {"max_visits": None}, STEP_RULES)
    assert sampling_problems("m", {"lookup_tokens": None}) == []
    assert sampling_problems("m", None) == []


def test_unknown_keys_are_the_script_actors_own():
    assert problems("s", {"customer_key": object(), "threshold": "x"}, STEP_RULES) == []


def test_a_problem_names_the_row_the_key_and_a_short_value():
    [line] = problems("step 3 (Grade) params", {"max_visits": "x" * 500}, STEP_RULES)
    assert line.startswith("step 3 (Grade) params: max_visits must be a whole number >= 1, "
                           'not "xxx')
    assert line.endswith("...") and len(line) < 140
    [line] = sampling_problems("model 'm' sampling", ["greedy"])
    assert line == "model 'm' sampling must be a JSON object, not [\"greedy\"]"
