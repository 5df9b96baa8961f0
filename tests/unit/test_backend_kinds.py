"""A new model backend is one module and one table entry: a kind registered here,
outside the wing, with `register_backend_kind`, serves a model step through the
real model lane and the real pool, which size the waves by the kind's own slot
count. Nothing in the lane or the pool names it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from interpreter.actor_api import Subject
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow
from interpreter.llm.backend import Generation, GenerationRequest, ModelLoadError, OpenSettings
from interpreter.llm.pool import (
    ModelPool,
    backend_kind,
    model_slots,
    register_backend_kind,
    unregister_backend_kind,
)
from interpreter.model_lane import ModelLane
from interpreter.model_lane import model_slots as lane_model_slots
from interpreter.run_context import RunContext, RunOptions
from interpreter.validate import environment_problems
from interpreter.wave_rules import Claimed
from interpreter.wave_store import Wave

SCHEME = "echoapi"
SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}


class EchoBackend:
    """An in-process stand-in for a server API (as vLLM's or Ollama's would be): it
    answers each prompt with JSON naming the prompt, serving `slots` calls at once."""

    opened: list[EchoBackend] = []

    def __init__(self, model: ModelDef, settings: OpenSettings):
        self.name = model.name
        self.sha256 = None
        self.size_bytes = 0
        self.n_ctx = model.n_ctx
        self.load_ms = 0.0
        self.slots = echo_slots(model)
        self.settings = settings
        self.requests: list[GenerationRequest] = []
        self.running = self.most_running = 0
        self.lock = threading.Lock()
        EchoBackend.opened.append(self)

    def generate(self, request: GenerationRequest) -> Generation:
        with self.lock:
            self.requests.append(request)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(0.02)    # long enough for the other slots' calls to overlap
        with self.lock:
            self.running -= 1
        text = json.dumps({"id": request.chat()[-1]["content"]})
        return Generation(text, "stop", 3, 5, 20.0)

    def count_prompt(self, messages: Any) -> int | None:
        return None

    def truncate_middle(self, text: str, max_tokens: int, marker: str = "\n[...]\n") -> str:
        return text

    def describe(self) -> dict[str, Any]:
        return {"chat_format": "the server's", "slots": self.slots}

    def close(self) -> None:
        pass


def echo_slots(model: ModelDef) -> int:
    """`echoapi://host#slots=N`: N calls at once (a malformed N does not parse)."""
    _, _, setting = model.source.partition("#slots=")
    if not setting:
        return 1
    if not setting.isdigit():
        raise ModelLoadError(f"bad slots in {model.source!r}")
    return int(setting)


@pytest.fixture
def echo_kind():
    EchoBackend.opened.clear()
    register_backend_kind(SCHEME, EchoBackend, echo_slots, "echo API")
    yield
    unregister_backend_kind(SCHEME)


def test_the_pool_and_the_lane_count_a_registered_kinds_slots(echo_kind):
    model = ModelDef("echo", f"{SCHEME}://gpu-box:9000#slots=6")
    assert backend_kind(model).name == "echo API"
    assert model_slots(model) == lane_model_slots(model) == 6
    assert model_slots(ModelDef("echo", f"{SCHEME}://gpu-box#slots=x")) == 1   # load says why
    # The built-in kinds are still found by their schemes.
    assert backend_kind(ModelDef("m", "m.gguf")).name == "llama.cpp in process"
    assert backend_kind(ModelDef("m", "HTTPS://gpu1:8080")).name == "OpenAI-compatible server"


def test_a_scheme_once_unregistered_is_read_as_a_file_again(echo_kind):
    unregister_backend_kind(SCHEME)
    assert backend_kind(ModelDef("echo", f"{SCHEME}://x")).name == "llama.cpp in process"


def test_a_bad_scheme_is_refused():
    with pytest.raises(ValueError):
        register_backend_kind("bad scheme", EchoBackend, echo_slots)
    with pytest.raises(ValueError):
        register_backend_kind("vllm://", EchoBackend, echo_slots)


def test_the_pool_opens_a_registered_kind_with_its_settings(echo_kind):
    events: list[dict[str, Any]] = []
    with ModelPool(1 << 30, events.append, n_threads=3, remote_timeout=7.0) as pool:
        backend = pool.acquire(ModelDef("echo", f"{SCHEME}://gpu-box#slots=2"))
        assert isinstance(backend, EchoBackend)
        assert backend.settings == OpenSettings(3, 7.0, 1 << 30)
        assert pool.acquire(ModelDef("echo", f"{SCHEME}://gpu-box#slots=2")) is backend
    assert [e["event"] for e in events] == ["load", "evict"]


# ------------------------------------------------------------------ a step through the lane

SUBJECTS = 12


def workflow(model: ModelDef) -> Workflow:
    step = StepDef(workflow_id=1, number=1, name="extract", kind="actor", actor="act",
                   template="t", params={"max_tokens": 8}, output_schema=SCHEMA)
    return Workflow(id=1, name="w", description="", subject_table="items", subject_key="id",
                    paused=False, version=1, steps={1: step}, transitions={}, entry_points=[],
                    actors={"act": ActorDef("act", "model", model.name)},
                    models={model.name: model}, templates={"t": "{{ id }}"})


class OneWaveStore:
    """A wave store and breaker that hand out one wave of the step, as large as the
    lane asks, and record the lane's limit and the commit."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.limits: list[int] = []
        self.committed: list[Any] = []
        self.done = False

    def ready_steps(self, cap: int) -> dict[int, int]:
        return {} if self.done else {1: SUBJECTS}

    def limit_wait(self, step: StepDef) -> float:
        return 0.0

    def claim(self, step: StepDef, limit: int, **kw: Any) -> Wave | None:
        self.limits.append(limit)
        self.done = True
        ids = [f"s{i}" for i in range(min(limit, SUBJECTS))]
        return Wave(step, 1, {i: Claimed(i, 0, 0) for i in ids},
                    [Subject(i, {"id": i}, {}) for i in ids], self.ctx.wf,
                    self.ctx.wf.model_of(step).name)

    def commit(self, wave: Wave, results: list[Any], busy_ms: float, *args: Any) -> int:
        self.committed.extend(results)
        self.ctx.stop.set()
        return len(results)

    def release(self, wave: Wave) -> None:
        raise AssertionError("nothing is given back")

    def allows(self, step: StepDef) -> int | None:
        return None

    def cooling(self, step: StepDef) -> bool:
        return False

    def end_probe(self, step: StepDef) -> None:
        pass


def test_a_model_step_runs_through_a_kind_registered_outside_the_wing(echo_kind):
    model = ModelDef("echo", f"{SCHEME}://gpu-box:9000#slots=8", n_ctx=512)
    ctx = RunContext(None, workflow(model), RunOptions(poll_s=0.05),  # type: ignore[arg-type]
                     "w1", threading.Event())
    store = OneWaveStore(ctx)
    ModelLane(ctx, store, store).main()  # type: ignore[arg-type]
    assert ctx.model_error is None
    # The lane sized the wave from the kind's slots: twice the 8 slots, more than the
    # default model batch size of 8, so the whole backlog came in one wave.
    assert store.limits == [16]
    assert {r.subject_id for r in store.committed} == {f"s{i}" for i in range(SUBJECTS)}
    assert all(r.ok and r.output == {"id": r.subject_id} for r in store.committed)
    # The pool opened the kind once, and the model actor kept its slots busy.
    (backend,) = EchoBackend.opened
    assert len(backend.requests) == SUBJECTS
    assert 1 < backend.most_running <= 8
    assert all(r.schema == SCHEMA and r.max_tokens == 8 for r in backend.requests)


def workflow_using(*models: ModelDef) -> Workflow:
    actors = {f"ask {m.name}": ActorDef(f"ask {m.name}", "model", m.name) for m in models}
    steps = {i: StepDef(1, i, f"step {i}", "actor", actor=f"ask {m.name}")
             for i, m in enumerate(models, 1)}
    return Workflow(1, "w", "", "public.t", "id", False, 1, steps, {}, [], actors,
                    {m.name: m for m in models}, {})


def test_validate_asks_the_kind_what_a_row_lacks(monkeypatch):
    """`validate` names no backend kind: what a row lacks in this environment is
    what its kind's `environment` check says, for a registered kind as for the
    built-in servers."""
    register_backend_kind(SCHEME, EchoBackend, echo_slots, "echo API",
                          environment=lambda m: [f"model {m.name!r}: no echo here"])
    monkeypatch.delenv("R3_UNSET_KEY", raising=False)
    try:
        echo = ModelDef("echo", f"{SCHEME}://x")
        server = ModelDef("server", "https://a.example", api_key_env="R3_UNSET_KEY")
        local = ModelDef("local", "/models/x.gguf")
        problems = environment_problems(workflow_using(echo, server, local))
    finally:
        unregister_backend_kind(SCHEME)
    assert problems[0] == "model 'echo': no echo here"
    assert len(problems) == 2 and "R3_UNSET_KEY" in problems[1]
    assert environment_problems(workflow_using(echo)) == []   # unregistered: a local file
