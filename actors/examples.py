"""The worked example's script actor (docs/writing-workflows.md).

A script actor is `def fn(subjects, params) -> list`: called once per wave
with a list of `interpreter.actor_api.Subject` (id, row, outputs, attempt) and
the actor's and step's params merged. It returns one item per subject, in
order: a JSON-able output, a `Result(output, outcome)`, or an Exception for a
subject that failed (the others still succeed).
"""

from __future__ import annotations

from typing import Any

from interpreter.actor_api import Result, Subject


def count_words(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    long_at = int(params.get("long_at", 120))
    out: list[Any] = []
    for s in subjects:
        words = len(str(s.row.get("description") or "").split())
        out.append(Result({"words": words}, "LONG" if words >= long_at else "SHORT"))
    return out
