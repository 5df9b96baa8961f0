"""The model actor kind: render, generate, validate, derive an outcome, for one wave.

The run loop calls `run_model_wave` on its model-lane thread with no database
connection held. Parameters come from the actor's params overlaid by the step's
params:

- ``sampling``: merged model.sampling < actor sampling < step sampling
  (temperature 0 by default; ``seed`` in sampling pins the seed);
- ``max_tokens`` (256), ``reask`` (2), ``on_overflow`` (``truncate`` | ``refuse``),
  ``system`` (an optional system prompt, itself a template).

Seeds are derived from (workflow, subject, step), so a rerun reproduces a
result even at temperature > 0; each re-ask uses the next seed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import jsonschema

from .actor_api import StepResult, Subject, is_outcome, utcnow
from .definitions import StepDef, Workflow
from .models import (
    DEFAULT_SAMPLING,
    Backend,
    Generation,
    GenerationError,
    ModelLoadError,
    ModelPool,
    PromptTooLong,
)
from .templates import TemplateRenderError, build_context, render

DEFAULT_MAX_TOKENS = 256
DEFAULT_REASK = 2
ECHO_CHARS = 600          # how much of a rejected answer is echoed back in a re-ask


def derive_seed(workflow_id: int, subject_id: str, step_number: int) -> int:
    digest = hashlib.sha256(f"{workflow_id}:{subject_id}:{step_number}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def effective_sampling(workflow: Workflow, step: StepDef) -> dict[str, Any]:
    model = workflow.model_of(step)
    actor = workflow.actor_of(step)
    sampling = dict(DEFAULT_SAMPLING)
    for layer in (model.sampling if model else None,
                  (actor.params if actor else {}).get("sampling"),
                  (step.params or {}).get("sampling")):
        if isinstance(layer, dict):
            sampling.update(layer)
    return sampling


def _validate(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} at char {exc.pos}"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return value, f"does not match the schema{' at ' + where if where else ''}: " \
                      f"{exc.message[:200]}"
    return value, None


def _outcome(step: StepDef, output: Any) -> str:
    """DONE without an outcome_field; else that field, uppercased (FAIL if not a label).

    Without an output schema the output is {"text": ...}, so outcome_field "text"
    lets a free-text grader answer PASS or FAIL.
    """
    if not step.outcome_field:
        return "DONE"
    value = output.get(step.outcome_field) if isinstance(output, dict) else None
    label = str(value).strip().upper() if value is not None else ""
    return label if is_outcome(label) else "FAIL"


def _fail_all(subjects: list[Subject], error: str, *, actor_failure: bool) -> list[StepResult]:
    return [StepResult.failure(s.id, error, actor_failure=actor_failure) for s in subjects]


def run_model_wave(pool: ModelPool, workflow: Workflow, step: StepDef, subjects: list[Subject],
                   should_stop: Callable[[], bool] = lambda: False) -> list[StepResult]:
    """Run one model step over a wave; one StepResult per processed subject.

    Returns early (results only for the subjects processed) when should_stop()
    turns true between subjects.
    """
    if not subjects:
        return []
    model = workflow.model_of(step)
    if model is None:
        actor = workflow.actor_of(step)
        what = (f"actor {step.actor!r} is not a model actor" if actor and actor.kind != "model"
                else f"model {actor.target!r} is not in interp.models" if actor
                else f"actor {step.actor!r} does not exist")
        return _fail_all(subjects, f"{step.label}: {what}", actor_failure=True)
    body = workflow.templates.get(step.template or "")
    if body is None:
        return _fail_all(subjects, f"{step.label}: prompt template {step.template!r} does not "
                                   f"exist in interp.prompt_templates", actor_failure=True)
    params = workflow.params_of(step)
    sampling = effective_sampling(workflow, step)
    try:
        max_tokens = int(params.get("max_tokens", DEFAULT_MAX_TOKENS))
        reask = max(0, int(params.get("reask", DEFAULT_REASK)))
    except (TypeError, ValueError):
        return _fail_all(subjects, f"{step.label}: max_tokens and reask must be integers",
                         actor_failure=True)
    on_overflow = str(params.get("on_overflow", "truncate"))
    system_body = params.get("system")
    try:
        backend = pool.acquire(model)
    except ModelLoadError as exc:
        return _fail_all(subjects, str(exc), actor_failure=True)

    results: list[StepResult] = []
    for subject in subjects:
        if should_stop():
            break
        started_at = utcnow()
        try:
            results.append(_run_one(backend, workflow, step, subject, body, system_body,
                                    sampling, max_tokens, reask, on_overflow))
        except Exception as exc:  # noqa: BLE001 - one subject's surprise must not end the wave
            results.append(StepResult.failure(
                subject.id, f"{step.label}: model actor error: {exc.__class__.__name__}: "
                            f"{' '.join(str(exc).split())[:300]}", started_at=started_at))
    return results


def _run_one(backend: Backend, workflow: Workflow, step: StepDef, subject: Subject, body: str,
             system_body: Any, sampling: dict[str, Any], max_tokens: int, reask: int,
             on_overflow: str) -> StepResult:
    started_at = utcnow()
    deadline = time.monotonic() + step.timeout_s
    pinned = sampling.get("seed")
    seed = int(pinned) if isinstance(pinned, int) else derive_seed(workflow.id, subject.id,
                                                                    step.number)
    # The role's name, even when the backend was loaded for another role that
    # shares the same file: ops ask "what did gemma2 say".
    model_def = workflow.model_of(step)
    audit: dict[str, Any] = {
        "model": model_def.name if model_def else backend.name,
        "model_sha256": backend.sha256, "seed": seed,
        "sampling": {**{k: v for k, v in sampling.items() if k != "seed"},
                     "max_tokens": max_tokens},
        "prompt_tokens": 0, "completion_tokens": 0, "gen_ms": 0.0, "tries": 0,
    }

    def failure(error: str, actor_failure: bool, output: Any = None) -> StepResult:
        result = StepResult.failure(subject.id, error, started_at=started_at,
                                    actor_failure=actor_failure, output=output)
        result.audit = audit
        return result

    try:
        context = build_context(subject, step)
        user = render(body, context)
        system = render(str(system_body), context) if system_body else None
    except TemplateRenderError as exc:
        return failure(f"{step.label}: prompt template {step.template!r} failed for subject "
                       f"{subject.id}: {exc}", actor_failure=False)

    # Context budget: the whole prompt (after the chat template) within n_ctx - max_tokens.
    budget = backend.n_ctx - max_tokens

    def chat(user_text: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": user_text}]

    prompt_tokens = backend.count_prompt(chat(user))
    if prompt_tokens is not None and prompt_tokens > budget:
        overhead = backend.count_prompt(chat("")) or 0
        room = budget - overhead - 2
        if on_overflow == "refuse" or room < 16:
            return failure(f"{step.label}: prompt for subject {subject.id} has "
                           f"{prompt_tokens} tokens; n_ctx {backend.n_ctx} leaves {budget} "
                           f"after max_tokens {max_tokens} (on_overflow={on_overflow})",
                           actor_failure=False)
        original = user
        for _ in range(3):   # re-tokenising at the cut can differ by a token or two
            user = backend.truncate_middle(original, room)
            excess = (backend.count_prompt(chat(user)) or 0) - budget
            if excess <= 0:
                break
            room -= excess + 2
        audit["truncated_from_tokens"] = prompt_tokens

    audit["prompt"] = json.dumps([system, user], ensure_ascii=False)  # the text hashed below
    audit["prompt_sha256"] = hashlib.sha256(
        json.dumps([system, user], ensure_ascii=False).encode()).hexdigest()
    messages = chat(user)
    schema = step.output_schema

    text, error = "", None
    for attempt in range(reask + 1):
        try:
            gen: Generation = backend.generate(messages, schema=schema, sampling=sampling,
                                               seed=(seed + attempt) & 0x7FFFFFFF,
                                               max_tokens=max_tokens, deadline=deadline)
        except PromptTooLong as exc:
            if attempt == 0:
                return failure(f"{step.label}: prompt for subject {subject.id} is too long: "
                               f"{exc}", actor_failure=False)
            break   # the re-ask conversation outgrew the context: settle with FAIL below
        except GenerationError as exc:
            return failure(f"{step.label}: generation failed: {exc}", actor_failure=True)
        audit["tries"] = attempt + 1
        audit["prompt_tokens"] += gen.prompt_tokens
        audit["completion_tokens"] += gen.completion_tokens
        audit["gen_ms"] = round(audit["gen_ms"] + gen.gen_ms, 3)
        audit["finish_reason"] = gen.finish_reason
        text = gen.text
        if gen.finish_reason == "timeout":
            return failure(f"{step.label}: timed out after {step.timeout_s:g}s for subject "
                           f"{subject.id}", actor_failure=True, output={"raw": text})
        if schema is None:
            output: Any = {"text": text}
            if gen.finish_reason == "length":
                output["truncated"] = True
            return StepResult(subject.id, True, _outcome(step, output), output=output,
                              started_at=started_at, finished_at=utcnow(), audit=audit)
        if gen.finish_reason == "length":
            error = f"output truncated at max_tokens={max_tokens}"
        else:
            value, error = _validate(text, schema)
            if error is None:
                return StepResult(subject.id, True, _outcome(step, value), output=value,
                                  started_at=started_at, finished_at=utcnow(), audit=audit)
        if attempt < reask:
            messages = messages[:2] if system else messages[:1]
            messages += [
                {"role": "assistant", "content": text[:ECHO_CHARS]},
                {"role": "user", "content": f"That answer was rejected: {error}. Reply with "
                                            f"only a complete JSON object that matches the "
                                            f"required schema."},
            ]
    return StepResult(subject.id, True, "FAIL",
                      output={"raw": text, "error": error or "no valid answer"},
                      started_at=started_at, finished_at=utcnow(), audit=audit)
