"""The rules a wave's results go through before the commit (interpreter.wave_rules),
without a database: transitions, the end, dead-lettering, retries with backoff,
output limits and the step's contract."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interpreter.actor_api import StepResult
from interpreter.definitions import ActorDef, StepDef, Workflow
from interpreter.wave_rules import (
    DEFAULT_MAX_VISITS,
    Claimed,
    backoff_seconds,
    build_commit,
    check_result,
    dump_output,
)

SCHEMA = {"type": "object", "required": ["score"],
          "properties": {"score": {"type": "integer"}}}


def step(number: int = 1, *, kind: str = "actor", max_attempts: int = 3,
         output_schema: dict[str, Any] | None = None, **params: Any) -> StepDef:
    return StepDef(workflow_id=1, number=number, name=f"step {number}", kind=kind,
                   actor="a" if kind == "actor" else None, output_schema=output_schema,
                   max_attempts=max_attempts, params=params)


def workflow(*steps: StepDef, transitions: dict[int, dict[str, int | None]]) -> Workflow:
    return Workflow(id=1, name="wf", description="", subject_table="public.items",
                    subject_key="id", paused=False, version=1,
                    steps={s.number: s for s in steps}, transitions=transitions,
                    entry_points=[], actors={"a": ActorDef("a", "script", "m:f")},
                    models={}, templates={})


def commit_one(wf: Workflow, s: StepDef, result: StepResult, *, attempts: int = 0,
               visits: int = 0) -> dict[str, Any]:
    """build_commit for one subject, as one row (column name -> value)."""
    claimed = {result.subject_id: Claimed(result.subject_id, attempts, visits)}
    cols = build_commit(wf, s, claimed, [result])
    assert all(len(v) == 1 for v in cols.values())
    return {k: v[0] for k, v in cols.items()}


def ok(outcome: str = "DONE", output: Any = None, **audit: Any) -> StepResult:
    return StepResult("s1", True, outcome, output=output, audit=audit)


# ---------------------------------------------------------------- build_commit

def test_a_transition_moves_the_subject_to_the_next_step():
    s1, s2 = step(1), step(2)
    wf = workflow(s1, s2, transitions={1: {"PASS": 2, "FAIL": None}})
    row = commit_one(wf, s1, ok("PASS", {"x": 1}), visits=3)
    assert (row["status"], row["next_step"], row["attempts"], row["visit_inc"]) == \
        ("ready", 2, 0, 1)
    assert row["ok"] is True and row["outcome"] == "PASS" and row["error"] is None
    assert json.loads(row["output"]) == {"x": 1}
    assert row["visit"] == 3 and row["attempt"] == 1 and row["delay_s"] == 0.0


def test_a_transition_to_nothing_ends_the_subject():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"FAIL": None}})
    row = commit_one(wf, s1, ok("FAIL"))
    assert (row["status"], row["next_step"], row["visit_inc"]) == ("done", None, 1)


def test_the_star_transition_catches_other_outcomes():
    s1 = step(1)
    wf = workflow(s1, step(4), transitions={1: {"PASS": None, "*": 4}})
    assert commit_one(wf, s1, ok("ODD"))["next_step"] == 4


def test_a_missing_transition_dead_letters_at_once():
    s1 = step(1, max_attempts=5)
    wf = workflow(s1, transitions={1: {"PASS": None}})
    row = commit_one(wf, s1, ok("MAYBE"), attempts=1)
    # a definition error: retrying cannot help, so no retry is spent
    assert (row["status"], row["next_step"], row["attempts"], row["visit_inc"]) == \
        ("dead", 1, 2, 0)
    assert row["ok"] is False and row["outcome"] == "ERROR"
    assert row["error"] == "no transition from step 1 for outcome MAYBE"


def test_max_visits_dead_letters_a_subject_that_cycles():
    s1 = step(1, max_visits=4)
    wf = workflow(s1, transitions={1: {"AGAIN": 1}})
    assert commit_one(wf, s1, ok("AGAIN"), visits=2)["status"] == "ready"
    row = commit_one(wf, s1, ok("AGAIN"), visits=3)
    assert (row["status"], row["next_step"], row["visit_inc"], row["ok"]) == \
        ("dead", 1, 0, False)
    assert "subject took 4 transitions" in row["error"]


def test_max_visits_defaults_to_the_documented_limit():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"AGAIN": 1}})
    assert commit_one(wf, s1, ok("AGAIN"), visits=DEFAULT_MAX_VISITS - 2)["status"] == "ready"
    assert commit_one(wf, s1, ok("AGAIN"), visits=DEFAULT_MAX_VISITS - 1)["status"] == "dead"


def test_a_failure_is_retried_with_exponential_backoff():
    s1 = step(1, max_attempts=4, retry_base_s=2, retry_max_s=5)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    fail = StepResult.failure("s1", "boom")
    rows = [commit_one(wf, s1, fail, attempts=n) for n in range(3)]
    assert [(r["status"], r["next_step"], r["attempts"]) for r in rows] == \
        [("ready", 1, 1), ("ready", 1, 2), ("ready", 1, 3)]
    assert [r["delay_s"] for r in rows] == [2.0, 4.0, 5.0]  # 2 * 2^(n-1), capped at 5
    assert all(r["visit_inc"] == 0 and r["error"] == "boom" for r in rows)
    assert [r["attempt"] for r in rows] == [1, 2, 3]


def test_a_failure_after_max_attempts_is_dead_lettered():
    s1 = step(1, max_attempts=3)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    row = commit_one(wf, s1, StepResult.failure("s1", "boom"), attempts=2)
    assert (row["status"], row["next_step"], row["attempts"], row["delay_s"]) == \
        ("dead", 1, 3, 0.0)
    assert row["error"] == "boom"


def test_backoff_defaults():
    s = step(1)
    assert [backoff_seconds(s, n) for n in (0, 1, 2, 3)] == [1.0, 1.0, 2.0, 4.0]
    assert backoff_seconds(s, 30) == 300.0


def test_an_output_too_large_becomes_an_error():
    s1 = step(1, max_output_bytes=10)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    row = commit_one(wf, s1, ok(output={"text": "é" * 20}))
    assert row["ok"] is False and row["output"] is None and row["status"] == "ready"
    assert row["error"].startswith("output too large: ")


def test_an_output_that_is_not_json_becomes_an_error():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    for bad in ({"x": object()}, {"x": float("nan")}):
        row = commit_one(wf, s1, ok(output=bad))
        assert row["ok"] is False and row["output"] is None
        assert row["error"].startswith("output is not JSON: ")


def test_nul_characters_in_an_output_are_replaced():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    row = commit_one(wf, s1, ok(output={"a": "x\x00y", "b": "\\u0000 stays text"}))
    assert row["ok"] is True
    assert json.loads(row["output"]) == {"a": "x\ufffdy", "b": "\\u0000 stays text"}


def test_dump_output_escaping_rules():
    assert dump_output(None, 100) == (None, None)
    # jsonb refuses the escape \u0000: it becomes the escape of U+FFFD
    assert dump_output("a\x00", 100) == (r'"a\ufffd"', None)
    # an escaped backslash before u0000 is literal text, not a NUL
    assert dump_output("\\u0000", 100) == (r'"\\u0000"', None)
    assert dump_output("\\\x00", 100) == (r'"\\\ufffd"', None)


def test_model_audit_is_carried_into_the_columns():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    row = commit_one(wf, s1, ok(model="m", model_sha256="abc", seed=7,
                                sampling={"temperature": 0}, prompt_tokens=3,
                                completion_tokens=4, gen_ms=1.5))
    assert (row["model"], row["model_sha256"], row["seed"], row["prompt_tokens"],
            row["completion_tokens"], row["gen_ms"]) == ("m", "abc", 7, 3, 4, 1.5)
    assert json.loads(row["sampling"]) == {"temperature": 0}


def test_one_element_per_subject_in_result_order():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    claimed = {i: Claimed(i, 0, 0) for i in ("a", "b", "c")}
    results = [StepResult(i, True, "DONE") for i in ("c", "a")]
    cols = build_commit(wf, s1, claimed, results)
    assert cols["ids"] == ["c", "a"]
    assert {len(v) for v in cols.values()} == {2}


# ---------------------------------------------------------------- check_result

@pytest.mark.parametrize("outcome", ["PASS\n", "pass", "", "2GO", "PA SS", None])
def test_an_invalid_outcome_becomes_an_error(outcome):
    checked = check_result(step(1), StepResult("s1", True, outcome))  # type: ignore[arg-type]
    assert checked.ok is False and checked.outcome == "ERROR"
    assert checked.error == f"invalid outcome {outcome!r}"


def test_a_valid_result_passes_unchanged():
    result = StepResult("s1", True, "PASS_2", output={"score": 1})
    assert check_result(step(1, output_schema=SCHEMA), result) is result


def test_a_failed_result_is_not_checked():
    result = StepResult.failure("s1", "boom", outcome="not an outcome")
    assert check_result(step(1, output_schema=SCHEMA), result) is result


def test_the_schema_is_checked_for_script_and_sql_actors():
    checked = check_result(step(1, output_schema=SCHEMA),
                           StepResult("s1", True, "DONE", output={"score": "high"}))
    assert checked.ok is False
    assert checked.error.startswith("output does not match the step's schema: ")


def test_model_results_and_gates_are_not_schema_checked_here():
    # a model step validates (and re-asks) itself; a gate has no output
    model = StepResult("s1", True, "FAIL", output={"raw": "text"}, audit={"model": "m"})
    assert check_result(step(1, output_schema=SCHEMA), model) is model
    gate = StepResult("s1", True, "RUN")
    assert check_result(step(1, kind="gate", output_schema=SCHEMA), gate) is gate
