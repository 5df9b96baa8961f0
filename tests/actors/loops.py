"""Script actors for loop tests: they report which pass through their step a
subject is on (Subject.visit_of_step), as a loop author's script would read it."""

from __future__ import annotations

from typing import Any

from interpreter.actor_api import Result, Subject


def rounds(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """AGAIN until the subject's pass through this step reaches params.rounds, then
    DONE; a subject at pass params.fail_at_visit fails its first attempt there."""
    last = int(params.get("rounds", 3))
    fail_at = params.get("fail_at_visit")
    out: list[Any] = []
    for s in subjects:
        if fail_at is not None and s.visit_of_step == int(fail_at) and s.attempt == 1:
            out.append(RuntimeError(f"pass {s.visit_of_step} of {s.id} fails its first attempt"))
            continue
        outcome = "DONE" if s.visit_of_step >= last else "AGAIN"
        out.append(Result({"visit": s.visit_of_step, "attempt": s.attempt}, outcome))
    return out
