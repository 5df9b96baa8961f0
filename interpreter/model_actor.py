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

A backend with N slots (a batched local model, a server taking N requests at
once) runs up to N subjects of the wave at once: a pool of N threads, each
taking the next subject and running its whole conversation (generate,
validate, re-ask), so a re-ask enters the backend as a new sequence while the
other subjects go on. Each result's audit records the slots in use (`batch_width`). Once every
subject of the wave has a thread, the wave says so (`all_started`): the model
lane then starts the next wave of the same model, whose subjects queue in the
backend behind this wave's (cross-wave continuity, docs/actors.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from .actor_api import StepResult, Subject, is_outcome, utcnow
from .definitions import StepDef, Workflow
from .errors import InternalError
from .llm.backend import (
    DEFAULT_SAMPLING,
    Backend,
    Generation,
    GenerationError,
    GenerationRequest,
    ModelLoadError,
    PromptTooLong,
)
from .llm.pool import ModelPool
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


@dataclass(frozen=True)
class ModelCall:
    """What every subject of one model wave shares: the loaded backend and the step's
    prompt and generation settings, resolved once per wave."""

    backend: Backend
    workflow: Workflow
    step: StepDef
    body: str                    # the prompt template's source
    system_body: str | None      # the optional system prompt's template source
    sampling: dict[str, Any]
    max_tokens: int
    reask: int
    on_overflow: str             # truncate | refuse
    should_stop: Callable[[], bool] = lambda: False
    slots: int = 1               # subjects generating at once (the backend's slots)


def run_model_wave(pool: ModelPool, workflow: Workflow, step: StepDef, subjects: list[Subject],
                   should_stop: Callable[[], bool] = lambda: False,
                   all_started: Callable[[], None] | None = None) -> list[StepResult]:
    """Run one model step over a wave; one StepResult per subject that ran, in the
    wave's order. Up to the backend's slots subjects run at once (see the module's
    docstring); with one slot they run one after another.

    all_started() is called once every subject has started, only by a wave whose
    subjects run concurrently (a backend with more than one slot, a wave of more
    than one subject): with one slot, or when the model did not load, it is never
    called, and the model lane lets the next wave wait for this one's end.

    should_stop() is read between subjects and between the tokens of a
    generation: when it turns true, the generation in flight is abandoned within
    one decode step (or one prompt chunk), and the results of the subjects that
    finished are returned. A subject that is absent from the list did not run:
    it was stopped before or during its generation, has no result, and is to be
    released without counting an attempt (the run loop gives back every claimed
    subject that has no result).
    """
    if not subjects:
        return []
    try:
        call = prepare_call(pool, workflow, step, should_stop=should_stop,
                            wave_size=len(subjects))
    except WaveFailure as exc:
        return [StepResult.failure(s.id, str(exc), actor_failure=True) for s in subjects]
    if call.slots > 1:
        return run_concurrently(call, subjects, all_started)
    results: list[StepResult] = []
    for subject in subjects:
        if should_stop():
            break
        result = run_subject_guarded(call, subject)
        if isinstance(result, NotRun):
            break
        results.append(result)
    return results


def run_concurrently(call: ModelCall, subjects: list[Subject],
                     all_started: Callable[[], None] | None = None) -> list[StepResult]:
    """The wave on call.slots threads, each running whole subjects; the results
    of the subjects that finished, in the wave's order. Once should_stop() turns
    true, subjects not started are not started, and those generating end without a
    result (the backend aborts them at its next decode step).

    all_started() is called when the last subject gets its thread: from then on
    no subject of this wave waits for a thread (the last one renders its prompt
    and enters the backend at once), so a later wave's subjects, queued in the
    backend behind this wave's, never hold up one of its first tries (a re-ask
    of this wave does queue behind them)."""
    countdown = Countdown(len(subjects), all_started)

    def one(subject: Subject) -> StepResult | NotRun:
        countdown.tick()
        if call.should_stop():
            return NOT_RUN
        return run_subject_guarded(call, subject)

    with cf.ThreadPoolExecutor(call.slots, thread_name_prefix="model-subject") as ex:
        outcomes = list(ex.map(one, subjects))
    return [r for r in outcomes if not isinstance(r, NotRun)]


class Countdown:
    """Calls `then` once, when `tick` has been called `n` times (from any threads)."""

    def __init__(self, n: int, then: Callable[[], None] | None):
        self.left = n
        self.then = then
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last and self.then is not None:
            self.then()


class WaveFailure(InternalError):
    """The step cannot run at all (no model, no template, bad params, load failure):
    every subject of the wave fails with this one-line message, as an actor failure."""


def prepare_call(pool: ModelPool, workflow: Workflow, step: StepDef, *,
                 should_stop: Callable[[], bool] = lambda: False,
                 wave_size: int = 1) -> ModelCall:
    """The wave's shared settings with its model loaded; raises WaveFailure. Its slots
    (subjects generating at once) are the backend's, at most the wave's size."""
    model = workflow.model_of(step)
    if model is None:
        raise WaveFailure(f"{step.label}: {_why_no_model(workflow, step)}")
    body = workflow.template_body(step)
    if body is None:
        version = f" version {step.template_version}" if step.template_version else ""
        raise WaveFailure(f"{step.label}: prompt template {step.template!r}{version} does not "
                          f"exist in interp.prompt_templates")
    params = workflow.params_of(step)
    try:
        max_tokens = int(params.get("max_tokens", DEFAULT_MAX_TOKENS))
        reask = max(0, int(params.get("reask", DEFAULT_REASK)))
    except (TypeError, ValueError):
        raise WaveFailure(f"{step.label}: max_tokens and reask must be integers") from None
    try:
        backend = pool.acquire(model)
    except ModelLoadError as exc:
        raise WaveFailure(str(exc)) from exc
    system = params.get("system")
    return ModelCall(backend, workflow, step, body, str(system) if system else None,
                     effective_sampling(workflow, step), max_tokens, reask,
                     str(params.get("on_overflow", "truncate")), should_stop,
                     max(1, min(backend.slots, wave_size)))


def _why_no_model(workflow: Workflow, step: StepDef) -> str:
    actor = workflow.actor_of(step)
    if actor is None:
        return f"actor {step.actor!r} does not exist"
    if actor.kind != "model":
        return f"actor {step.actor!r} is not a model actor"
    return f"model {actor.target!r} is not in interp.models"


class NotRun:
    """The marker for a subject whose generation was stopped: no result, no attempt."""

    def __repr__(self) -> str:
        return "NOT_RUN"


NOT_RUN = NotRun()


def run_subject_guarded(call: ModelCall, subject: Subject) -> StepResult | NotRun:
    """One subject; an unexpected exception fails that subject only, never the wave."""
    started_at = utcnow()
    try:
        return run_subject(call, subject)
    except Exception as exc:  # noqa: BLE001 - one subject's surprise must not end the wave
        return StepResult.failure(
            subject.id, f"{call.step.label}: model actor error: {exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:300]}", started_at=started_at)


class SubjectRun:
    """One subject's way through a model step: its seed, audit and deadline."""

    def __init__(self, call: ModelCall, subject: Subject):
        self.call = call
        self.subject = subject
        self.started_at = utcnow()
        self.deadline = time.monotonic() + call.step.timeout_s
        self.seed = subject_seed(call, subject)
        self.audit = new_audit(call, self.seed)

    def failure(self, error: str, *, actor_failure: bool, output: Any = None) -> StepResult:
        result = StepResult.failure(self.subject.id, error, started_at=self.started_at,
                                    actor_failure=actor_failure, output=output)
        result.audit = self.audit
        return result

    def success(self, outcome: str, output: Any) -> StepResult:
        return StepResult(self.subject.id, True, outcome, output=output,
                          started_at=self.started_at, finished_at=utcnow(), audit=self.audit)

    def record(self, attempt: int, gen: Generation) -> None:
        audit = self.audit
        audit["tries"] = attempt + 1
        audit["prompt_tokens"] += gen.prompt_tokens
        audit["completion_tokens"] += gen.completion_tokens
        audit["gen_ms"] = round(audit["gen_ms"] + gen.gen_ms, 3)
        audit["finish_reason"] = gen.finish_reason
        # Summed over the tries that could tell; NULL when none could (a server
        # that does not report its cache, a backend without forced tokens).
        for key in ("prompt_tokens_reused", "forced_tokens"):
            value = getattr(gen, key)
            if value is not None:
                audit[key] = (audit[key] or 0) + value


def subject_seed(call: ModelCall, subject: Subject) -> int:
    """The sampling's pinned seed, else one derived from (workflow, subject, step)."""
    pinned = call.sampling.get("seed")
    if isinstance(pinned, int):
        return pinned
    return derive_seed(call.workflow.id, subject.id, call.step.number)


def new_audit(call: ModelCall, seed: int) -> dict[str, Any]:
    # The role's name, even when the backend was loaded for another role that
    # shares the same file: ops ask "what did gemma2 say".
    model_def = call.workflow.model_of(call.step)
    return {
        "model": model_def.name if model_def else call.backend.name,
        "model_sha256": call.backend.sha256, "seed": seed,
        "sampling": {**{k: v for k, v in call.sampling.items() if k != "seed"},
                     "max_tokens": call.max_tokens},
        "prompt_tokens": 0, "completion_tokens": 0, "gen_ms": 0.0, "tries": 0,
        "batch_width": call.slots,   # the column keeps its name (docs/schema.md)
        "prompt_tokens_reused": None, "forced_tokens": None,
    }


def run_subject(call: ModelCall, subject: Subject) -> StepResult | NotRun:
    run = SubjectRun(call, subject)
    step = call.step
    try:
        context = build_context(subject, step)
        user = render(call.body, context)
        system = render(call.system_body, context) if call.system_body else None
    except TemplateRenderError as exc:
        return run.failure(f"{step.label}: prompt template {step.template!r} failed for "
                           f"subject {subject.id}: {exc}", actor_failure=False)
    fitted = fit_to_context(run, system, user)
    if isinstance(fitted, StepResult):
        return fitted
    # The text that was asked, kept once per distinct sha256 (interp.prompts) at commit.
    run.audit["prompt"] = json.dumps([system, fitted], ensure_ascii=False)
    run.audit["prompt_sha256"] = hashlib.sha256(run.audit["prompt"].encode()).hexdigest()
    return generate_until_valid(run, chat_messages(system, fitted))


def chat_messages(system: str | None, user: str) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}]


def fit_to_context(run: SubjectRun, system: str | None, user: str) -> str | StepResult:
    """The user text, cut in the middle when the whole prompt (after the chat format)
    would not leave max_tokens of the context window; a failure when it must be
    refused or cannot be cut enough."""
    call, backend = run.call, run.call.backend
    budget = backend.n_ctx - call.max_tokens
    prompt_tokens = backend.count_prompt(chat_messages(system, user))
    if prompt_tokens is None or prompt_tokens <= budget:
        return user
    overhead = backend.count_prompt(chat_messages(system, "")) or 0
    room = budget - overhead - 2
    if call.on_overflow == "refuse" or room < 16:
        return run.failure(f"{call.step.label}: prompt for subject {run.subject.id} has "
                           f"{prompt_tokens} tokens; n_ctx {backend.n_ctx} leaves {budget} "
                           f"after max_tokens {call.max_tokens} "
                           f"(on_overflow={call.on_overflow})", actor_failure=False)
    cut = user
    for _ in range(3):   # re-tokenising at the cut can differ by a token or two
        cut = backend.truncate_middle(user, room)
        excess = (backend.count_prompt(chat_messages(system, cut)) or 0) - budget
        if excess <= 0:
            break
        room -= excess + 2
    run.audit["truncated_from_tokens"] = prompt_tokens
    return cut


def generate_until_valid(run: SubjectRun,
                         messages: list[dict[str, str]]) -> StepResult | NotRun:
    """Generate, validate against the output schema, and re-ask with the reason up to
    `reask` times; FAIL (a well-formed outcome) when no answer is valid; NOT_RUN
    when the run is stopped during a generation."""
    call, step = run.call, run.call.step
    schema = step.output_schema
    first_turns = len(messages)
    text, error = "", None
    for attempt in range(call.reask + 1):
        try:
            gen = call.backend.generate(GenerationRequest(
                messages, schema=schema, sampling=call.sampling,
                seed=(run.seed + attempt) & 0x7FFFFFFF, max_tokens=call.max_tokens,
                deadline=run.deadline, should_stop=call.should_stop))
        except PromptTooLong as exc:
            if attempt == 0:
                return run.failure(f"{step.label}: prompt for subject {run.subject.id} is too "
                                   f"long: {exc}", actor_failure=False)
            break   # the re-ask conversation outgrew the context: settle with FAIL below
        except GenerationError as exc:
            return run.failure(f"{step.label}: generation failed: {exc}", actor_failure=True)
        if gen.finish_reason == "aborted":
            return NOT_RUN
        run.record(attempt, gen)
        text = gen.text
        if gen.finish_reason == "timeout":
            return run.failure(f"{step.label}: timed out after {step.timeout_s:g}s for subject "
                               f"{run.subject.id}", actor_failure=True, output={"raw": text})
        if schema is None:
            return run.success(*free_text_result(step, gen))
        value, error = check_answer(gen, schema, call.max_tokens)
        if error is None:
            return run.success(_outcome(step, value), value)
        if attempt < call.reask:
            messages = reask_messages(messages[:first_turns], text, error)
    return run.success("FAIL", {"raw": text, "error": error or "no valid answer"})


def free_text_result(step: StepDef, gen: Generation) -> tuple[str, dict[str, Any]]:
    output: dict[str, Any] = {"text": gen.text}
    if gen.finish_reason == "length":
        output["truncated"] = True
    return _outcome(step, output), output


def check_answer(gen: Generation, schema: dict[str, Any],
                 max_tokens: int) -> tuple[Any, str | None]:
    """The parsed answer and None, or why it is rejected."""
    if gen.finish_reason == "length":
        return None, f"output truncated at max_tokens={max_tokens}"
    return _validate(gen.text, schema)


def reask_messages(first_turns: list[dict[str, str]], answer: str,
                   error: str) -> list[dict[str, str]]:
    """The original turns, the rejected answer (cut to ECHO_CHARS) and why it was rejected."""
    return first_turns + [
        {"role": "assistant", "content": answer[:ECHO_CHARS]},
        {"role": "user", "content": f"That answer was rejected: {error}. Reply with only a "
                                    f"complete JSON object that matches the required schema."},
    ]
