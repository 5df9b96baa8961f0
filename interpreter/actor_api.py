"""The contract between the run loop and the actor kinds.

An actor kind takes a wave of `Subject`s and returns one `StepResult` per
subject, in any order. The run loop owns claiming, committing, retries and the
breaker; an actor kind only computes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DEFAULT_OUTCOME = "DONE"
# An outcome label: upper case, digits and underscores. \Z, not $: Python's $ also
# matches before a trailing newline, and 'PASS\n' is not a label.
OUTCOME_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def is_outcome(label: Any) -> bool:
    """Whether a value is a valid outcome label: a string, the whole of it (no
    trailing newline). Anything else an actor hands back (None, a number) is not."""
    return isinstance(label, str) and OUTCOME_PATTERN.match(label) is not None


def outcome_of(value: Any, default: str) -> str:
    """The outcome an author's value names, the same on every road (a gate's fast
    road does this in SQL: upper(coalesce(nullif(value::text, ''), default))).

    NULL and '' name no outcome: the default. Anything else is its text in upper
    case, so a boolean is TRUE or FALSE, as PostgreSQL writes it. Only ASCII is
    upper-cased: Python would turn 'skıp' (dotless i) into SKIP, PostgreSQL would
    not, and a label that is not ASCII is refused either way."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    text = str(value)
    return text.upper() if text.isascii() else text


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Subject:
    """One subject in a wave, as actors see it."""

    id: str                      # the subject key, as text
    row: dict[str, Any]          # the subject table's row (to_jsonb)
    outputs: dict[str, Any]      # earlier steps' latest outputs, keyed by step number as text
    attempt: int = 1             # 1 for the first try at this step
    # Which pass through this step this is: 1 the first time the subject reaches
    # it, 2 when a loop brings it back after one success here, ... (its earlier
    # successful checkpoints at this step, plus one; retries do not count).
    visit_of_step: int = 1


@dataclass
class StepResult:
    subject_id: str
    ok: bool                     # False: an error; the subject is retried or dead-lettered
    outcome: str                 # transitions branch on this (RUN, SKIP, PASS, FAIL, DONE...)
    output: Any = None
    error: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime = field(default_factory=utcnow)
    # For model steps: model, model_sha256, seed, sampling, prompt_tokens,
    # completion_tokens, gen_ms.
    audit: dict[str, Any] = field(default_factory=dict)
    # True when the actor itself failed (exception, timeout, model would not
    # load): this counts towards the circuit breaker. A well-formed FAIL does not.
    actor_failure: bool = False

    @classmethod
    def failure(cls, subject_id: str, error: str, *, outcome: str = "ERROR",
                started_at: datetime | None = None, actor_failure: bool = True,
                output: Any = None) -> StepResult:
        now = utcnow()
        return cls(subject_id, False, outcome, output=output, error=error,
                   started_at=started_at or now, finished_at=now, actor_failure=actor_failure)


def failed_wave(ids: list[str], error: str, started: datetime, *, outcome: str = "ERROR",
                actor_failure: bool = True) -> list[StepResult]:
    """The same failure for every subject of a wave (its statement failed or timed out)."""
    return [StepResult.failure(i, error, outcome=outcome, started_at=started,
                               actor_failure=actor_failure) for i in ids]


@dataclass
class Result:
    """What a script actor may return for a subject to name the outcome itself."""

    output: Any
    outcome: str = DEFAULT_OUTCOME
