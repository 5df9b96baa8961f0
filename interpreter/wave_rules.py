"""The rules that decide what a wave's results do to its subjects.

Each result is checked against the step's contract, normalised to what
PostgreSQL will store, then routed along the transitions, retried with backoff
or dead-lettered, and turned into the column arrays that the wave store writes
with commit_results. Pure functions (no database), so the rules are
unit-tested alone; nothing here commits.

Normalising is what keeps one subject's odd value from failing its whole wave
at commit time (docs/reliability.md, "Poison results"):

- an outcome must be a label to the end of the string ('PASS\\n' is not one);
  a failed result with no valid outcome is written as ERROR;
- an output is serialised as jsonb will store it: NUL becomes U+FFFD (jsonb
  refuses \\u0000), a lone surrogate becomes U+FFFD (it is not UTF-8; a pair
  becomes the character it encodes), a Decimal becomes a number (an integer
  when integral, else a double, as psycopg reads a jsonb number), a date, time
  or timestamp its ISO 8601 text and a UUID its text; nesting deeper than the
  JSON encoder allows (about 1,000 levels; jsonb itself takes about 10,000),
  NaN, infinities and other types are an error for that subject;
- error texts and the model audit's texts lose their NULs and lone surrogates,
  and audit numbers outside their column's range are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import jsonschema

from .actor_api import StepResult, is_outcome
from .definitions import StepDef, Workflow
from .errors import InvalidValue, NotJsonValue

DEFAULT_MAX_OUTPUT_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_VISITS = 1000
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The audit's integer columns and the range each takes (bigint, int; batch_width
# has a CHECK of its own).
_AUDIT_INTS = {"seed": (-2**63, 2**63 - 1), "prompt_tokens": (-2**31, 2**31 - 1),
               "completion_tokens": (-2**31, 2**31 - 1), "batch_width": (1, 2**31 - 1),
               "prompt_tokens_reused": (0, 2**31 - 1), "forced_tokens": (0, 2**31 - 1)}


@dataclass
class Claimed:
    """What the engine knows about a claimed subject before running it."""

    subject_id: str
    attempts: int   # failed attempts so far at this step
    visits: int


def dump_output(output: Any, limit: int) -> tuple[str | None, str | None]:
    """JSON text for an output as jsonb will store it, or an error (see the module's
    docstring for the conversions)."""
    if output is None:
        return None, None
    try:
        text = json.dumps(output, ensure_ascii=False, allow_nan=False, default=json_value)
    except RecursionError:
        return None, "output is nested too deeply to store as JSON"
    except (TypeError, ValueError) as exc:
        return None, f"output is not JSON: {exc}"
    text = without_lone_surrogates(text)
    if len(text) > limit:  # characters; a cheap, safe upper bound check first
        size = len(text.encode("utf-8"))
        if size > limit:
            return None, f"output too large: {size} bytes > {limit}"
    if "\\u0000" in text:
        text = _NUL_ESCAPE.sub(lambda m: m.group(1) + "\\ufffd", text)
    return text, None


def json_value(value: Any) -> Any:
    """The JSON form of the values psycopg returns for SQL types that JSON lacks
    (json.dumps calls this for any value it cannot write itself)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidValue(f"numeric {value} is not a JSON number")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise NotJsonValue(f"Object of type {type(value).__name__} is not JSON serializable")


def without_lone_surrogates(text: str) -> str:
    """Text that encodes as UTF-8: a surrogate pair becomes the character it stands
    for (as a JSON parser reads "\\ud83d\\ude00"), a lone surrogate U+FFFD."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_text(text: Any) -> str | None:
    """Text as a PostgreSQL text column takes it: NUL, which it refuses, and lone
    surrogates, which are not UTF-8, become U+FFFD."""
    if text is None:
        return None
    text = str(text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return without_lone_surrogates(text)


def clean_audit(audit: dict[str, Any]) -> dict[str, Any]:
    """A model audit whose values fit their checkpoint columns: texts cleaned,
    numbers out of their column's range (or not numbers) dropped."""
    clean: dict[str, Any] = dict(audit)
    for key in ("model", "model_sha256"):
        if clean.get(key) is not None:
            clean[key] = clean_text(clean[key])
    for key, (low, top) in _AUDIT_INTS.items():
        value = clean.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not low <= value <= top):
            clean[key] = None
    gen_ms = clean.get("gen_ms")
    if gen_ms is not None and (not isinstance(gen_ms, int | float)
                               or not math.isfinite(gen_ms)):
        clean["gen_ms"] = None
    return clean


def normalise_result(result: StepResult) -> StepResult:
    """A routed result with the values PostgreSQL will accept: a failed result with
    no valid outcome is an ERROR, error texts and the audit cleaned."""
    outcome = result.outcome if result.ok or is_outcome(result.outcome) else "ERROR"
    error = clean_text(result.error)
    audit = clean_audit(result.audit) if result.audit else result.audit
    if outcome == result.outcome and error == result.error and audit == result.audit:
        return result
    return dataclasses.replace(result, outcome=outcome, error=error, audit=audit)


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
        except RecursionError:
            return StepResult.failure(result.subject_id,
                                      "output is nested too deeply to check against the schema",
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
    "prompt_sha256", "prompt", "batch_width", "prompt_tokens_reused", "forced_tokens")


@dataclass
class Settled:
    """A result as the commit will write it, and where it sends its subject."""

    result: StepResult        # an error result when a check failed
    output_text: str | None   # the output as jsonb text
    move: Move

    @property
    def succeeds(self) -> bool:
        """Whether it commits as a success (a SQL actor keeps its effects only then)."""
        return self.result.ok


def settle(wf: Workflow, step: StepDef, c: Claimed, r: StepResult) -> Settled:
    """Checks, normalises and routes one result: what the commit writes for it."""
    limit = int(step.params.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES))
    max_visits = int(step.params.get("max_visits", DEFAULT_MAX_VISITS))
    r = check_result(step, r)
    output_text, output_error = dump_output(r.output, limit)
    if output_error:
        r = StepResult.failure(r.subject_id, output_error, started_at=r.started_at)
        output_text = None
    r, move = route(wf, step, c, r, max_visits)
    return Settled(normalise_result(r), output_text, move)


def build_commit(wf: Workflow, step: StepDef, claimed: dict[str, Claimed],
                 results: list[StepResult]) -> dict[str, list[Any]]:
    """Column arrays for the commit_results query, one element per subject."""
    cols: dict[str, list[Any]] = {k: [] for k in COMMIT_COLUMNS}
    for r in results:
        c = claimed[r.subject_id]
        s = settle(wf, step, c, r)
        append_row(cols, c, s.result, s.output_text, s.move)
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
    cols["sampling"].append(dump_output(sampling, DEFAULT_MAX_OUTPUT_BYTES)[0])
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
    cols["batch_width"].append(audit.get("batch_width"))
    cols["prompt_tokens_reused"].append(audit.get("prompt_tokens_reused"))
    cols["forced_tokens"].append(audit.get("forced_tokens"))
