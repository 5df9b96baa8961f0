"""Script actors: a `module:function` called once per wave with the batch.

The function receives a list of `Subject` (row, earlier outputs, attempt) and
returns one item per subject, in the same order: a JSON-able output (outcome
DONE, or the step's outcome_field), a `Result(output, outcome)`, or an
Exception instance for a subject that failed. If the whole call raises, each
subject is retried alone, so one bad subject does not fail the rest.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

from .actor_api import DEFAULT_OUTCOME, Result, StepResult, Subject, outcome_of, utcnow
from .definitions import ActorDef, StepDef, merged_params
from .errors import DefinitionError

# Only the shipped user-space actors. Test and bench actors live outside the
# package and are allowed by their own configuration, never by default.
DEFAULT_ALLOWED_PREFIXES = ("actors",)


def allowed_prefixes() -> tuple[str, ...]:
    """Module paths a database row may name (INTERP_SCRIPT_PREFIXES, comma-separated).

    Each entry is a dotted module path; a trailing dot is accepted and ignored."""
    raw = os.environ.get("INTERP_SCRIPT_PREFIXES")
    if not raw:
        return DEFAULT_ALLOWED_PREFIXES
    return tuple(p.strip().rstrip(".") for p in raw.split(",") if p.strip().rstrip("."))


def module_allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether module is one of prefixes or inside one, compared by dotted components:
    ``actors`` allows ``actors`` and ``actors.x.y`` but not ``actorsx.y``."""
    parts = module.split(".")
    return any(parts[:len(p.split("."))] == p.split(".") for p in prefixes)


def check_target(target: str) -> tuple[str, str]:
    module, sep, func = target.partition(":")
    if not sep or not module or not func:
        raise DefinitionError(f"script target {target!r} is not module:function")
    prefixes = allowed_prefixes()
    if not module_allowed(module, prefixes):
        raise DefinitionError(
            f"script target {target!r} is outside the allowed module prefixes {list(prefixes)}")
    return module, func


def load_target(target: str) -> Callable[..., Any]:
    module_name, func_name = check_target(target)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(f"script target {target!r}: cannot import {module_name}: {exc}") \
            from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise DefinitionError(f"script target {target!r}: {module_name} has no function "
                              f"{func_name}")
    return func


class ScriptRunner:
    """Calls script actors with a timeout.

    A thread cannot be killed, so a call that outlives its step's timeout is
    abandoned: its results are ignored and a fresh executor serves the next
    wave. Repeated hangs open the actor's breaker.
    """

    def shutdown(self) -> None:
        """Nothing to wait for: calls run on daemon threads, and an abandoned call
        must not keep the process alive after the run has ended."""

    def run_wave(self, actor: ActorDef, step: StepDef, subjects: list[Subject]) -> list[StepResult]:
        started = utcnow()
        try:
            func = load_target(actor.target)
        except DefinitionError as exc:
            return [StepResult.failure(s.id, str(exc), started_at=started) for s in subjects]
        params = merged_params(actor, step)
        try:
            items = self._call(func, subjects, params, step.timeout_s)
        except cf.TimeoutError:
            return [StepResult.failure(s.id, f"timed out after {step.timeout_s:g}s",
                                       outcome="TIMEOUT", started_at=started) for s in subjects]
        except BaseException as whole:  # noqa: BLE001 - isolate the subject that broke it
            if len(subjects) == 1:
                return [StepResult.failure(subjects[0].id, describe(whole), started_at=started)]
            results: list[StepResult] = []
            for s in subjects:
                results.extend(self.run_wave(actor, step, [s]))
            return results
        if not isinstance(items, list | tuple) or len(items) != len(subjects):
            n = len(items) if isinstance(items, list | tuple) else type(items).__name__
            return [StepResult.failure(
                s.id, f"script returned {n} items for {len(subjects)} subjects",
                started_at=started) for s in subjects]
        finished = utcnow()
        return [to_result(s, item, step, started, finished) for s, item in zip(subjects, items,
                                                                                strict=True)]

    @staticmethod
    def _call(func: Callable[..., Any], subjects: list[Subject], params: dict[str, Any],
              timeout: float) -> Any:
        # A daemon thread per call, not an executor: concurrent.futures joins its
        # threads at exit, so one hung actor would keep the process alive forever.
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = func(subjects, params)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="script-actor", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise cf.TimeoutError()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def to_result(subject: Subject, item: Any, step: StepDef, started, finished) -> StepResult:
    if isinstance(item, BaseException):
        return StepResult.failure(subject.id, describe(item), started_at=started)
    if isinstance(item, Result):
        output, outcome = item.output, item.outcome
    else:
        output, outcome = item, DEFAULT_OUTCOME
        if step.outcome_field and isinstance(item, dict):
            # the same rule as a gate's or SQL actor's outcome column
            outcome = outcome_of(item.get(step.outcome_field), DEFAULT_OUTCOME)
    return StepResult(subject.id, True, outcome, output=output, started_at=started,
                      finished_at=finished)
