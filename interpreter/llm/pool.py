"""The model pool, and the one table of backend kinds.

A model row's ``source`` names what serves it; its scheme (the text before
``://``, or ``file`` for a path, ``pkg:<module>/<file>`` or ``gemma3-270m``)
picks a backend kind from `KINDS`. A kind says how to open a backend for a row
and how many sequences that backend serves at once (known without opening it,
for the model lane's waves). Built in:

- ``file``: a GGUF in this process (`llama_backend`): one sequence at a time,
  or, with the row's ``parallel`` > 1 (or GPU layers), the batched backend;
- ``http``, ``https``: OpenAI-compatible servers (`remote`).

A kind may also say what `validate` checks of a row (``problems`` refuse a run,
``warnings`` are shown, ``environment``: what this process lacks for it).

A new kind (vLLM's or Ollama's own API, ...) is one module implementing
`backend.Backend` and one `register_backend_kind` call; the pool, the lane,
the model actor and `validate` need no change (tests/unit/test_backend_kinds.py
registers one from outside the wing).

Threading: a `ModelPool` and the backends it holds belong to one thread (the
model lane); see `ModelPool`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..definitions import ModelDef
from ..errors import InvalidValue
from .backend import Backend, Generation, GenerationRequest, ModelLoadError, OpenSettings
from .files import estimate_bytes, names_server, source_scheme
from .llama_backend import local_warnings, open_local, parallel_of
from .remote import open_remote, remote_slots
from .remote_checks import environment_problems, key_warnings, source_problems

# ---------------------------------------------------------------- backend kinds


def no_problems(model: ModelDef) -> list[str]:
    return []


RowCheck = Callable[[ModelDef], list[str]]


@dataclass(frozen=True)
class BackendKind:
    """How to open a backend for a model row, and how many sequences it serves at
    once (from the row alone, without opening it; may raise ModelLoadError when
    the source does not parse, which counts as 1: its load then says why).
    `problems`, `warnings` and `environment` are `validate`'s checks of a row
    (each a list of one-line sentences naming the model; no server contacted)."""

    name: str
    open: Callable[[ModelDef, OpenSettings], Backend]
    slots: Callable[[ModelDef], int]
    problems: RowCheck = no_problems
    warnings: RowCheck = no_problems
    environment: RowCheck = no_problems


KINDS: dict[str, BackendKind] = {}


def register_backend_kind(scheme: str, open: Callable[[ModelDef, OpenSettings], Backend],
                          slots: Callable[[ModelDef], int], name: str | None = None, *,
                          problems: RowCheck = no_problems, warnings: RowCheck = no_problems,
                          environment: RowCheck = no_problems) -> None:
    """Makes sources ``<scheme>://...`` open with `open`, their slots counted by
    `slots`, and checked by `problems`, `warnings` and `environment` (see
    `BackendKind`). A scheme registered again is replaced (the last registration
    wins)."""
    scheme = scheme.lower()
    if not scheme or "://" in scheme or not scheme.replace("+", "").replace("-", "")\
            .replace(".", "").isalnum():
        raise InvalidValue(f"bad backend scheme {scheme!r}: expected a URL scheme like 'vllm'")
    KINDS[scheme] = BackendKind(name or scheme, open, slots, problems, warnings, environment)


def unregister_backend_kind(scheme: str) -> None:
    """Forgets a registered scheme (sources with it are then read as file paths)."""
    KINDS.pop(scheme.lower(), None)


register_backend_kind("file", open_local, parallel_of, "llama.cpp in process",
                      warnings=local_warnings)
register_backend_kind("http", open_remote, remote_slots, "OpenAI-compatible server",
                      problems=source_problems, warnings=key_warnings,
                      environment=environment_problems)
register_backend_kind("https", open_remote, remote_slots, "OpenAI-compatible server",
                      problems=source_problems, warnings=key_warnings,
                      environment=environment_problems)


def backend_kind(model: ModelDef) -> BackendKind:
    """The kind that serves a row: by its source's scheme; a scheme no kind
    registered is read as a file path, as any other local source."""
    return KINDS.get(source_scheme(model.source)) or KINDS["file"]


def model_slots(model: ModelDef) -> int:
    """Sequences a model serves at once, known without loading it (its kind's
    count; 1 when its source does not parse: its load fails and says why)."""
    try:
        return max(1, backend_kind(model).slots(model))
    except ModelLoadError:
        return 1


def open_backend(model: ModelDef, settings: OpenSettings | None = None) -> Backend:
    """Load one model with the backend its kind opens (raises ModelLoadError with a
    one-line message)."""
    return backend_kind(model).open(model, settings or OpenSettings())


# ---------------------------------------------------------------- pool

def load_key(model: ModelDef) -> str:
    """What identifies a loaded model: the file (or server) and the settings it was
    loaded with (a local model's prefix cache budget among them). Sampling and the
    row's name do not change what is loaded."""
    return f"{model.source}|{model.n_ctx}|{model.n_gpu_layers}|{model.n_threads}|" \
           f"{model.chat_format}|{model.parallel}" + \
           (f"|{model.api_key_env}|{model.ca_bundle}" if names_server(model.source)
            else f"|{model.prefix_cache_mb}")


class ModelPool:
    """Models resident within a memory budget (estimated as file size), LRU eviction.

    ``acquire(model)`` returns a loaded backend, loading it (and evicting the
    least recently used models until it fits) when needed. ``loads`` counts
    loads and ``switches`` counts the times generation moved from one model to
    another. Every load, switch, eviction and failed load is reported to
    ``on_event`` as a dict (event, model, from_model, duration_ms, detail), for
    the run loop to write to ``interp.model_events``.

    Evicting a model closes its backend, and with it the backend's prefix cache
    (`prefix_cache`): a model loaded again starts with an empty cache, while a
    switch between two resident models keeps both caches. The caches' memory
    (each row's prefix_cache_mb) is not counted in the budget, which counts the
    weights (and a batched model's KV cache).

    A model bigger than the whole budget is still loaded, alone. A pool is not
    thread-safe: its calls must never overlap. The model lane's generation
    threads share one, and start a wave beside another only once that one has
    acquired its backend, for the same loaded model (so nothing loads or evicts
    under a generation). A backend with more than one slot serves any threads at
    once; a one-slot `LlamaBackend` serves one thread at a time.
    """

    def __init__(self, budget_bytes: int, on_event: Callable[[dict[str, Any]], None] | None = None,
                 *, n_threads: int | None = None, remote_timeout: float = 30.0):
        self.budget_bytes = budget_bytes
        self.on_event = on_event
        self.n_threads = n_threads
        self.remote_timeout = remote_timeout
        self._resident: OrderedDict[str, tuple[ModelDef, Backend]] = OrderedDict()
        self.current: str | None = None     # load key of the model generating now
        self._current_name: str | None = None   # the row name that generated last
        self.loads = 0
        self.switches = 0
        self.evictions = 0
        self.load_failures = 0

    def _emit(self, event: str, model: str, *, from_model: str | None = None,
              duration_ms: float | None = None, detail: str | None = None) -> None:
        if self.on_event is not None:
            self.on_event({"event": event, "model": model, "from_model": from_model,
                           "duration_ms": duration_ms, "detail": detail})

    @property
    def resident(self) -> list[str]:
        """Names of the loaded models (the row that loaded each), least recently used first."""
        return [m.name for m, _ in self._resident.values()]

    @property
    def used_bytes(self) -> int:
        return sum(b.size_bytes for _, b in self._resident.values())

    def _key_of(self, name_or_key: str) -> str | None:
        if name_or_key in self._resident:
            return name_or_key
        for key, (m, _) in self._resident.items():
            if m.name == name_or_key:
                return key
        return None

    def evict(self, name: str, reason: str = "explicit") -> None:
        """Closes a resident model, named by row name or load key."""
        key = self._key_of(name)
        if key is None:
            return
        model, backend = self._resident.pop(key)
        started = time.perf_counter()
        backend.close()
        self.evictions += 1
        if self.current == key:
            self.current = None
        self._emit("evict", model.name, duration_ms=(time.perf_counter() - started) * 1000,
                   detail=reason)

    def acquire(self, model: ModelDef) -> Backend:
        """The loaded backend for model, most recently used from now on.

        Residency is keyed by what would be loaded (`load_key`), not by the row's
        name: two roles ("gemma2", "qwen2.5") that point at the same file with the
        same settings share one loaded model, and moving between them is no switch.
        """
        key = load_key(model)
        # Remember who was generating before any eviction below clears `current`:
        # a load that evicts the previous model is a switch too.
        previous_key, previous_name = self.current, self._current_name
        entry = self._resident.get(key)
        load_ms = 0.0
        if entry is None:
            need = estimate_bytes(model)
            while self._resident and self.used_bytes + need > self.budget_bytes:
                lru = next(iter(self._resident))
                self.evict(lru, f"budget {self.budget_bytes} bytes; need {need} for "
                                f"{model.name}")
            started = time.perf_counter()
            try:
                backend = open_backend(model, OpenSettings(self.n_threads, self.remote_timeout,
                                                           self.budget_bytes))
            except ModelLoadError as exc:
                self.load_failures += 1
                self._emit("load_failed", model.name,
                           duration_ms=(time.perf_counter() - started) * 1000, detail=str(exc))
                raise
            load_ms = (time.perf_counter() - started) * 1000
            self.loads += 1
            entry = (model, backend)
            self._resident[key] = entry
            self._emit("load", model.name, duration_ms=load_ms,
                       detail=f"{backend.size_bytes} bytes, sha256 {backend.sha256}")
        else:
            if model.sha256 and entry[1].sha256 and model.sha256 != entry[1].sha256:
                raise ModelLoadError(f"{model.name}: sha256 mismatch: the row says "
                                     f"{model.sha256}, the file is {entry[1].sha256}")
            self._resident.move_to_end(key)
        if previous_key != key:
            if previous_key is not None:
                self.switches += 1
                self._emit("switch", model.name, from_model=previous_name,
                           duration_ms=load_ms)
            self.current = key
        self._current_name = model.name
        return entry[1]

    def generate(self, model: ModelDef, request: GenerationRequest) -> Generation:
        return self.acquire(model).generate(request)

    def close(self) -> None:
        for name in list(self._resident):
            self.evict(name, "pool closed")
        self.current = None

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

