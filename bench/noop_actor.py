"""No-op script actor for bench/bench_engine.py.

It does the least a script actor can do: one output per subject (None, so no
output is stored and the outcome is DONE). What is left to measure is the
engine: claim, call, checkpoint, advance.
"""

from __future__ import annotations

from typing import Any

from interpreter.actor_api import Subject


def noop(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:  # noqa: ARG001
    return [None] * len(subjects)
