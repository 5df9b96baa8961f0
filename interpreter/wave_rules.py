"""The rules that decide what a wave's results do to its subjects.

Each result is checked against the step's contract, then routed along the
transitions, retried with backoff or dead-lettered, and turned into the column
arrays that the wave store writes with commit_results. Pure functions (no
database), so the rules are unit-tested alone; nothing here commits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from .actor_api import StepResult, is_outcome
from .definitions import StepDef, Workflow

DEFAULT_MAX_OUTPUT_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_VISITS = 1000
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


@dataclass
class Claimed:
    """What the engine knows about a claimed subject before running it."""

    subject_id: str
    attempts: int   # failed attempts so far at this step
    visits: int


def dump_output(output: Any, limit: int) -> tuple[str | None, str | None]:
    """JSON text for an output, or an error. PostgreSQL's jsonb refuses \\u0000, so NULs
    become U+FFFD (the same rule as for subject text)."""
    if output is None:
        return None, None
    try:
        text = json.dumps(output, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return None, f"output is not JSON: {exc}"
    if len(text) > limit:  # characters; a cheap, safe upper bound check first
        size = len(text.encode("utf-8"))
        if size > limit:
            return None, f"output too large: {size} bytes > {limit}"
    if "\\u0000" in text:
        text = _NUL_ESCAPE.sub(lambda m: m.group(1) + "\\ufffd", text)
    return text, None


def check_result(step: StepDef, result: StepResult) -> StepResult:
    """Validates a successful result against the step's contract; turns a breach into an error."""
    if not result.ok:
        return result
    if not is_outcome(result.outcome):
        return StepResult.failure(result.subject_id, f"invalid outcome {result.outcome!r}",
                                  started_at=result.started_at)
    if step.output_schema and step.kind == "actor" and not result.audit.get("model"):
        # Model steps validate (and re-ask) themselves; other actors are checked here.
        try:
            jsonschema.validate(result.output, step.output_schema)
        except jsonschema.ValidationError as exc:
            return StepResult.failure(
                result.subject_id, f"output does not match the step's schema: {exc.message}",
                started_at=result.started_at)
    return result


def backoff_seconds(step: StepDef, failed_attempts: int) -> float:
    base = float(step.params.get("retry_base_s", 1.0))
    cap = float(step.params.get("retry_max_s", 300.0))
    return min(cap, base * (2 ** max(0, failed_attempts - 1)))


@dataclass
class Move:
    """Where a result sends its subject: the subject_state columns the commit sets."""

    status: str              # ready | done | dead
    next_step: int | None    # None: the end of the workflow
    attempts: int            # failed attempts at the step it will be at
    delay_s: float = 0.0     # before it may be claimed again (a retry's backoff)
    visit_inc: int = 0       # 1 when it moved along a transition


def route(wf: Workflow, step: StepDef, c: Claimed, r: StepResult,
          max_visits: int) -> tuple[StepResult, Move]:
    """The move for a checked result: along its transition, or a retry with backoff,
    or a dead letter. A success that cannot move (no transition, the visit limit)
    becomes an error result, dead-lettered at once since retrying cannot help."""
    if not r.ok:
        failed = c.attempts + 1
        if failed >= step.max_attempts:
            return r, Move("dead", step.number, failed)
        return r, Move("ready", step.number, failed, delay_s=backoff_seconds(step, failed))
    found, nxt = wf.next_step(step.number, r.outcome)
    if not found:
        error = f"no transition from step {step.number} for outcome {r.outcome}"
    elif c.visits + 1 >= max_visits:
        error = f"subject took {max_visits} transitions: a cycle with no exit?"
    else:
        return r, Move("done" if nxt is None else "ready", nxt, 0, visit_inc=1)
    dead = StepResult(r.subject_id, False, "ERROR", error=error, started_at=r.started_at,
                      finished_at=r.finished_at, audit=r.audit)
    return dead, Move("dead", step.number, c.attempts + 1)


COMMIT_COLUMNS = (
    "ids", "visit", "attempt", "ok", "outcome", "output", "error", "started", "finished",
    "model", "model_sha256", "seed", "sampling", "prompt_tokens", "completion_tokens",
    "gen_ms", "next_step", "status", "attempts", "visit_inc", "delay_s",
    "prompt_sha256", "prompt")


def build_commit(wf: Workflow, step: StepDef, claimed: dict[str, Claimed],
                 results: list[StepResult]) -> dict[str, list[Any]]:
    """Column arrays for the commit_results query, one element per subject."""
    limit = int(step.params.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES))
    max_visits = int(step.params.get("max_visits", DEFAULT_MAX_VISITS))
    cols: dict[str, list[Any]] = {k: [] for k in COMMIT_COLUMNS}
    for r in results:
        c = claimed[r.subject_id]
        r = check_result(step, r)
        output_text, output_error = dump_output(r.output, limit)
        if output_error:
            r = StepResult.failure(r.subject_id, output_error, started_at=r.started_at)
            output_text = None
        r, move = route(wf, step, c, r, max_visits)
        append_row(cols, c, r, output_text, move)
    return cols


def append_row(cols: dict[str, list[Any]], c: Claimed, r: StepResult,
               output_text: str | None, move: Move) -> None:
    """Adds one subject's values to the commit_results column arrays."""
    audit = r.audit
    sampling = audit.get("sampling")
    cols["ids"].append(r.subject_id)
    cols["visit"].append(c.visits)
    cols["attempt"].append(c.attempts + 1)
    cols["ok"].append(r.ok)
    cols["outcome"].append(r.outcome)
    cols["output"].append(output_text)
    cols["error"].append(r.error)
    cols["started"].append(r.started_at)
    cols["finished"].append(r.finished_at)
    cols["model"].append(audit.get("model"))
    cols["model_sha256"].append(audit.get("model_sha256"))
    cols["seed"].append(audit.get("seed"))
    cols["sampling"].append(json.dumps(sampling) if sampling is not None else None)
    cols["prompt_tokens"].append(audit.get("prompt_tokens"))
    cols["completion_tokens"].append(audit.get("completion_tokens"))
    cols["gen_ms"].append(audit.get("gen_ms"))
    cols["next_step"].append(move.next_step)
    cols["status"].append(move.status)
    cols["attempts"].append(move.attempts)
    cols["visit_inc"].append(move.visit_inc)
    cols["delay_s"].append(float(move.delay_s))
    cols["prompt_sha256"].append(audit.get("prompt_sha256"))
    cols["prompt"].append(audit.get("prompt"))
