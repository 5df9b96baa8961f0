"""The rules a wave's results go through before the commit (interpreter.wave_rules),
without a database: transitions, the end, dead-lettering, retries with backoff,
output limits, the step's contract, and the normalising that keeps one
subject's odd value from failing its wave (plus how the wave store tells a
transient error from a refused row)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from interpreter.actor_api import StepResult, is_outcome, outcome_of
from interpreter.definitions import ActorDef, StepDef, Workflow
from interpreter.wave_rules import (
    DEFAULT_MAX_VISITS,
    Claimed,
    backoff_seconds,
    build_commit,
    check_result,
    clean_text,
    dump_output,
    normalise_result,
    settle,
)
from interpreter.waves import is_connection_error, is_refusal, is_transient

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
                                completion_tokens=4, gen_ms=1.5, batch_width=4))
    assert (row["model"], row["model_sha256"], row["seed"], row["prompt_tokens"],
            row["completion_tokens"], row["gen_ms"]) == ("m", "abc", 7, 3, 4, 1.5)
    assert json.loads(row["sampling"]) == {"temperature": 0}
    assert row["batch_width"] == 4


def test_reused_and_forced_tokens_are_carried_and_checked_for_their_column():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    row = commit_one(wf, s1, ok(model="m", prompt_tokens=90, prompt_tokens_reused=70,
                                forced_tokens=12))
    assert (row["prompt_tokens_reused"], row["forced_tokens"]) == (70, 12)
    row = commit_one(wf, s1, ok(model="m", prompt_tokens_reused=-1, forced_tokens=2**31))
    assert (row["prompt_tokens_reused"], row["forced_tokens"]) == (None, None)
    assert commit_one(wf, s1, ok())["prompt_tokens_reused"] is None


def test_a_result_without_a_model_audit_has_no_batch_width():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    assert commit_one(wf, s1, ok())["batch_width"] is None


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


# ---------------------------------------------------------------- poison values

def test_outputs_are_normalised_as_jsonb_will_store_them():
    when = datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    text, error = dump_output({"n": Decimal("2.50"), "i": Decimal("12345678901234567890"),
                               "at": when, "day": date(2024, 1, 2), "t": time(7, 8),
                               "u": UUID(int=1)}, 1000)
    assert error is None
    assert json.loads(text) == {"n": 2.5, "i": 12345678901234567890,
                                "at": "2024-01-02T03:04:05.600000+00:00", "day": "2024-01-02",
                                "t": "07:08:00", "u": "00000000-0000-0000-0000-000000000001"}


def test_lone_surrogates_become_the_replacement_character():
    # a lone surrogate is not UTF-8 (psycopg cannot even send it); a pair is one character
    assert dump_output({"a\ud800": "x\udfffy", "pair": "\ud83d\ude00"}, 100) == \
        ('{"a\ufffd": "x\ufffdy", "pair": "\U0001f600"}', None)
    assert clean_text("e\x00r\ud800") == "e\ufffdr\ufffd"
    assert clean_text(None) is None


@pytest.mark.parametrize("bad, message", [
    (Decimal("NaN"), "output is not JSON: numeric NaN is not a JSON number"),
    (Decimal("-Infinity"), "output is not JSON: numeric -Infinity is not a JSON number"),
    (b"bytes", "output is not JSON: Object of type bytes is not JSON serializable"),
])
def test_values_with_no_json_form_are_an_error(bad, message):
    assert dump_output({"x": bad}, 1000) == (None, message)


def test_an_output_nested_too_deeply_is_an_error_not_a_crash():
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert dump_output(deep, 10**6) == (None, "output is nested too deeply to store as JSON")
    s1 = step(1, output_schema={"type": "array", "items": {"$ref": "#"}})
    checked = check_result(s1, StepResult("s1", True, "DONE", output=deep))
    assert checked.ok is False and "nested too deeply" in checked.error


def test_error_texts_outcomes_and_audit_are_made_storable():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    failed = StepResult.failure("s1", "bad\x00 \udc80", outcome="not an outcome")
    row = commit_one(wf, s1, failed)
    assert (row["ok"], row["outcome"], row["error"]) == (False, "ERROR", "bad\ufffd \ufffd")
    row = commit_one(wf, s1, ok(model="m\x00", seed=2**64, prompt_tokens=True,
                                completion_tokens=2**31, gen_ms=float("nan"),
                                sampling={"x": object()}, batch_width=0))
    assert (row["model"], row["seed"], row["prompt_tokens"], row["completion_tokens"],
            row["gen_ms"], row["sampling"], row["batch_width"]) == (
        "m\ufffd", None, None, None, None, None, None)


def test_normalise_result_keeps_a_clean_result_as_it_is():
    result = StepResult("s1", True, "DONE", error=None, audit={"model": "m", "seed": 1})
    assert normalise_result(result) is result


def test_settle_says_whether_a_result_commits_as_a_success():
    s1 = step(1)
    wf = workflow(s1, transitions={1: {"DONE": None}})
    c = Claimed("s1", 0, 0)
    assert settle(wf, s1, c, ok("DONE", {"n": Decimal("1")})).succeeds
    assert settle(wf, s1, c, ok("DONE", {"n": Decimal("1")})).output_text == '{"n": 1}'
    for bad in (ok("IN-REVIEW"), ok("PASS\n"), ok("NOWHERE"), ok(output={"x": object()}),
                StepResult.failure("s1", "boom")):
        assert not settle(wf, s1, c, bad).succeeds


@pytest.mark.parametrize("value, outcome", [
    (None, "RUN"), ("", "RUN"), (False, "FALSE"), (True, "TRUE"), ("skip", "SKIP"),
    ("pass\n", "PASS\n"), (0, "0"), ("skıp", "skıp"),
])
def test_an_outcome_value_means_the_same_on_every_road(value, outcome):
    # the gate's fast road computes upper(coalesce(nullif(value::text, ''), default))
    assert outcome_of(value, "RUN") == outcome


def test_is_outcome_takes_only_strings():
    assert is_outcome("PASS") and not is_outcome("PASS\n")
    assert not is_outcome(5) and not is_outcome(None) and not is_outcome(["PASS"])


# ---------------------------------------------------------------- errors told apart

def pg_error(cls: type[psycopg.Error], sqlstate: str | None) -> psycopg.Error:
    exc = cls("boom")
    if sqlstate is not None:
        exc.sqlstate = sqlstate  # type: ignore[misc]
    return exc


@pytest.mark.parametrize("exc, transient, refusal, connection", [
    (pg_error(psycopg.errors.DeadlockDetected, "40P01"), True, False, False),
    (pg_error(psycopg.errors.SerializationFailure, "40001"), True, False, False),
    (pg_error(psycopg.errors.LockNotAvailable, "55P03"), True, False, False),
    (pg_error(psycopg.errors.QueryCanceled, "57014"), True, False, False),
    (pg_error(psycopg.errors.AdminShutdown, "57P01"), False, False, True),
    (pg_error(psycopg.OperationalError, None), False, False, True),
    (pg_error(psycopg.DataError, None), False, True, False),   # NUL refused by psycopg
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False, True, False),
    (pg_error(psycopg.errors.CheckViolation, "23514"), False, True, False),
    (pg_error(psycopg.errors.StatementTooComplex, "54001"), False, True, False),
    (pg_error(psycopg.errors.RaiseException, "P0001"), False, True, False),
    (pg_error(psycopg.errors.DiskFull, "53100"), False, False, False),
    (RuntimeError("a bug"), False, False, False),
])
def test_the_wave_store_tells_errors_apart(exc, transient, refusal, connection):
    assert (is_transient(exc), is_refusal(exc), is_connection_error(exc)) == \
        (transient, refusal, connection)
