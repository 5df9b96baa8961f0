"""Fault-injecting script actors, for tests and chaos runs.

Each misbehaves in one documented way so that tests can show the engine's
answer: retry, timeout, breaker or dead letter. They are ordinary script
actors; nothing in the engine knows about them.
"""

from __future__ import annotations

import time
from typing import Any

from interpreter.actor_api import Result, Subject


def ok(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Echoes the subject id; outcome from params (default DONE)."""
    return [Result({"id": s.id, "attempt": s.attempt}, params.get("outcome", "DONE"))
            for s in subjects]


def fail_k_times(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Fails each subject's first k attempts, then succeeds."""
    k = int(params.get("k", 2))
    return [RuntimeError(f"attempt {s.attempt} of {s.id} fails on purpose")
            if s.attempt <= k else {"id": s.id, "attempt": s.attempt} for s in subjects]


def raise_always(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    raise RuntimeError("this actor always raises")


def fail_marked(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Raises for the whole wave when any subject's title contains 'BOOM': the engine
    must isolate that subject and let the others succeed."""
    for s in subjects:
        if "BOOM" in str(s.row.get("title", "")):
            raise ValueError(f"cannot handle subject {s.id}")
    return [{"id": s.id} for s in subjects]


def hang(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    time.sleep(float(params.get("seconds", 3600)))
    return [{"id": s.id} for s in subjects]


def wrong_shape(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    return [{"unexpected": True} for _ in subjects]


def wrong_count(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    return [{"id": s.id} for s in subjects[1:]]


def huge_output(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    size = int(params.get("bytes", 10 * 1024 * 1024))
    return [{"blob": "x" * size} for _ in subjects]


def not_json(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    return [{"value": object()} for _ in subjects]


def out_of_memory(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Asks for far more memory than exists; Python raises MemoryError at once."""
    bytearray(1 << 50)
    return [{} for _ in subjects]


def slow(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    time.sleep(float(params.get("seconds", 0.01)) * len(subjects))
    return [{"id": s.id} for s in subjects]
