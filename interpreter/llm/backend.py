"""What every model backend is: the `Backend` protocol, the `GenerationRequest` it
takes and the `Generation` it gives back, the settings a backend is opened with,
and the wing's errors.

A backend kind (llama.cpp in process, an OpenAI-compatible server, ...) lives in
one module of this wing and is made known to the pool by one entry of its table
(`pool.register_backend_kind`); nothing outside the pool names a kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import InternalError, InterpError
from .chat_format import Messages

# Sampling keys that reach llama.cpp (and the OpenAI-compatible server).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty",
                 "presence_penalty", "frequency_penalty")
DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 0.95, "top_k": 40,
                                    "min_p": 0.05, "repeat_penalty": 1.0}


# ---------------------------------------------------------------- errors

class ModelLoadError(InterpError):
    """A model could not be resolved or loaded (missing file, corrupt GGUF, sha256 mismatch)."""


class GenerationError(InternalError):
    """Generation itself failed (llama.cpp error, server error, unreachable server)."""


class PromptTooLong(GenerationError):
    """The prompt does not fit the context window."""


class ServerDown(GenerationError):
    """The server failed, not the request: unreachable, refused, a 5xx or 429, a
    timeout, or an answer that is not an OpenAI chat completion."""


class ServerTimedOut(ServerDown):
    """The server did not answer within the request's timeout."""


class EngineError(InternalError):
    """The batching engine could not start, or a decode step failed (a one-line message)."""


# ---------------------------------------------------------------- requests and answers

@dataclass(frozen=True)
class GenerationRequest:
    """One completion asked of a backend.

    messages: the chat (a string is one user message); schema: the JSON schema the
    answer is constrained to (None: free text); sampling: the model's sampling
    settings (`SAMPLING_KEYS`, and ``lookup_tokens`` for a local model); seed;
    max_tokens: the most tokens generated; deadline: a `time.monotonic()` instant
    at which generation ends with finish_reason "timeout" (None: no deadline);
    should_stop: polled while generating, ends it with "aborted" once true.
    """

    messages: Messages | str
    schema: dict[str, Any] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_tokens: int = 256
    deadline: float | None = None
    should_stop: Callable[[], bool] | None = None

    def chat(self) -> Messages:
        """The messages as a chat (a string becomes one user message)."""
        return as_messages(self.messages)


@dataclass
class Generation:
    text: str
    finish_reason: str          # stop | length | timeout | aborted
    prompt_tokens: int
    completion_tokens: int
    gen_ms: float                   # from a slot taken to the answer (the wait not counted)
    prompt_ms: float = 0.0          # of gen_ms, the time spent on the prompt (local models)
    wait_ms: float = 0.0            # before gen_ms: queued for a sequence slot or a server slot
    grammar_rejections: int = 0     # sampled tokens the output schema's grammar refused
    full_vocab_masks: int = 0       # of those, the ones that needed the whole vocabulary
    # Prompt tokens whose KV cells were reused instead of decoded (the previous
    # call's, or the prefix cache's); None where the backend cannot tell (a server
    # that reports no cached tokens).
    prompt_tokens_reused: int | None = None
    # Answer tokens the output schema's grammar forced, added without sampling
    # (jump-forward decoding); None where the backend cannot tell (a server).
    forced_tokens: int | None = None


@dataclass(frozen=True)
class OpenSettings:
    """How the pool opens a backend, whatever its kind: threads for a local model
    (None: the default rule), a server's request timeout, and the model memory
    budget a local model's KV cache is checked against (None: unchecked)."""

    n_threads: int | None = None
    remote_timeout: float = 30.0
    budget_bytes: int | None = None


def server_cached_tokens(usage: dict[str, Any]) -> int | None:
    """The prompt tokens a server says it took from its own prompt cache
    (``usage.prompt_tokens_details.cached_tokens``, OpenAI's field, which vLLM
    and llama.cpp's server also send), or None when it does not say, or says more
    than the prompt's tokens (the audit's prompt_tokens - prompt_tokens_reused are
    the tokens decoded, never negative)."""
    details = usage.get("prompt_tokens_details")
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    try:
        prompt = int(usage.get("prompt_tokens", 0))
    except (TypeError, ValueError):
        return None
    return value if value <= prompt else None


def as_messages(messages_or_prompt: Messages | str) -> Messages:
    if isinstance(messages_or_prompt, str):
        return [{"role": "user", "content": messages_or_prompt}]
    return list(messages_or_prompt)


# ---------------------------------------------------------------- the protocol

class Backend(Protocol):
    """What the model actor needs from a loaded model, wherever it runs.

    Implemented by `llama_backend.LlamaBackend` (a GGUF in this process),
    `llama_backend.BatchedLlamaBackend` (a GGUF in this process serving `slots`
    sequences at once) and `remote.RemoteBackend` (OpenAI-compatible servers); a new
    kind is registered with `pool.register_backend_kind`. A backend with one slot
    is used from one thread; one with N slots takes up to N generate() calls at
    once from N threads.
    """

    # Read-only for callers (properties here, so that an implementation may narrow
    # the types: LlamaBackend's sha256 is always a str).
    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def size_bytes(self) -> int:
        """Memory it takes in this process (0 for a server)."""
        ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def load_ms(self) -> float: ...
    @property
    def slots(self) -> int:
        """How many generate() calls it serves at once, from as many threads (1: calls
        come from one thread, one at a time)."""
        ...

    def generate(self, request: GenerationRequest) -> Generation:
        """One completion of the request's chat; with a schema, the text is constrained to it.

        Ends with finish_reason "timeout" at the deadline (monotonic clock) and
        "aborted" soon after should_stop() turns true (within one decode step or
        prompt chunk locally; within 0.1 s for a server, whose request is
        abandoned)."""
        ...

    def count_prompt(self, messages: Messages) -> int | None:
        """Prompt tokens after the chat format, or None when this side cannot tell."""
        ...

    def truncate_middle(self, text: str, max_tokens: int, marker: str = "\n[...]\n") -> str:
        """text cut in the middle to about max_tokens tokens (unchanged if it cannot tell)."""
        ...

    def describe(self) -> dict[str, Any]:
        """How the model runs (chat format, threads...), for `interp models check`."""
        ...

    def close(self) -> None:
        ...

