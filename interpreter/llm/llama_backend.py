"""The llama.cpp backends: a GGUF loaded in this process with llama-cpp-python,
serving one sequence at a time (`LlamaBackend`) or several at once through the
continuous-batching engine (`BatchedLlamaBackend`), and the threads they run on.

Threading: a backend belongs to the thread that uses it (the model lane's). One
``llama_cpp.Llama`` is never shared between threads; the batched backend's
engine runs its own decode-loop thread.

``llama_cpp`` is imported lazily, inside functions, so that commands that never
generate (``interp db ...``) stay fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..definitions import ModelDef
from ..errors import first_line
from .backend import (
    EngineError,
    Generation,
    GenerationError,
    GenerationRequest,
    ModelLoadError,
    OpenSettings,
    PromptTooLong,
    as_messages,
)
from .chat_format import ChatFormat, ChatFormatError, Messages, choose_format
from .cpu_share import IdleCpus, threads_for
from .files import check_sha256, resolve
from .prefix_cache import PrefixCache, budget_bytes_of

# Sequences a GPU model serves at once when its row has no `parallel`.
DEFAULT_GPU_PARALLEL = 8


# ---------------------------------------------------------------- threads

_OMP_SET_BY: str | None = None


def prepare_llama_import() -> None:
    """Sets OMP_WAIT_POLICY=passive before llama.cpp's OpenMP runtime loads, unless the
    user set it. With the default (active) policy, llama.cpp's idle OpenMP workers
    spin, and on a shared machine they take the cores other work needs: prompts
    ran several times slower (docs/benchmarks.md, Figures behind the model
    runtime's constants). The runtime reads the variable once, when it loads, so
    this must run before the first ``import llama_cpp``."""
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
      by memory bandwidth, and more threads only wait on each other;
    - prompt processing on the CPUs that other processes leave free (rounded up;
      at least 1, at most 16): it is compute-bound and scales with cores, but
      threads on cores that other processes use only wait for them (figures in
      docs/benchmarks.md, Figures behind the model runtime's constants). Measured before every
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
    control character"), and the answer is re-asked or FAILs (most of one 3001
    step's answers did, docs/benchmarks.md). Replacing the rule keeps every grammar-made answer
    parseable (a newline can still be written, escaped, as JSON requires)."""
    return re.sub(r"^char ::= .*$", lambda _: JSON_STRING_CHAR_RULE, gbnf, count=1,
                  flags=re.MULTILINE)


class LlamaBackend:
    """One GGUF file loaded in process with llama-cpp-python. Use from one thread only.

    Generation runs token by token through `decode.LlamaDecoder`: the grammar
    of an output schema only checks the sampled token (see that module).
    Prompts start from the longest head found in the model's prefix cache
    (`prefix_cache`, the row's prefix_cache_mb), which is freed when the
    backend closes (a pool eviction, a model switch that evicts it).
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
        self.prefix_cache = PrefixCache(budget_bytes_of(model.prefix_cache_mb))
        prepare_llama_import()
        try:
            from .decode import LlamaDecoder
            from .llama_build import extra_buffers_choice, open_llama
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
                                    # Sliding-window layers (Gemma 3) keep every cell:
                                    # a prefix cut back to a shorter head needs the
                                    # cells before it (llama.cpp's default; said here
                                    # because the prefix reuse depends on it).
                                    swa_full=True, verbose=False, seed=0)
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
        # A subclass that decodes in a context of its own keeps the cache there.
        self.decoder = LlamaDecoder(self.llama, gpu=model.n_gpu_layers != 0,
                                    prompt_threads=self.prompt_threads,
                                    cache=self.prefix_cache if own_context is None else None)
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
        pieces, shape = self.chat_format.pieces(as_messages(messages))
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
                "prefix_cache": self.prefix_cache.stats(),
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
        its string character rule replaced by llama.cpp's own (`json_string_chars`)
        and one whitespace layout, json.dumps' (`forced.canonical_whitespace`), so
        that keys and separators are forced text (jump-forward decoding)."""
        key = json.dumps(schema, sort_keys=True)
        gbnf = self._grammars.get(key)
        if gbnf is None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            from .gbnf import canonical_whitespace

            gbnf = canonical_whitespace(json_string_chars(json_schema_to_gbnf(json.dumps(schema))))
            self._grammars[key] = gbnf
        return gbnf

    def generate(self, request: GenerationRequest) -> Generation:
        prompt, stop = self.prompt_tokens(request.messages)
        if len(prompt) >= self.n_ctx:
            raise PromptTooLong(f"prompt has {len(prompt)} tokens; the context window "
                                f"(n_ctx) is {self.n_ctx}")
        from .token_sampling import TokenSampler

        schema = request.schema
        started = time.perf_counter()
        try:
            sampler = TokenSampler(self.llama, request.sampling, request.seed,
                                   self.grammar_for(schema) if schema is not None else None,
                                   self.sampler_buffers())
            try:
                text, decoded = self.decode_prompt(prompt, stop, sampler, request)
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
                          full_vocab_masks=decoded.full_vocab_masks,
                          prompt_tokens_reused=decoded.reused_prefix,
                          forced_tokens=decoded.forced_tokens)

    def sampler_buffers(self) -> Any:
        """The candidate buffers the samplers share (one set per loaded model)."""
        return self.decoder.buffers

    def decode_prompt(self, prompt: list[int], stop: list[str], sampler: Any,
                      request: GenerationRequest) -> tuple[str, Any]:
        """Decodes the prompt and generates: the text, and the decoder's record of it
        (finish reason, token counts, timings). One sequence, on this thread, drafting
        by prompt lookup as the request's sampling says (drafting.LookupDrafter)."""
        decoded = self.decoder.generate(prompt, stop, sampler, request)
        return decoded.text, decoded

    def close(self) -> None:
        cache = getattr(self, "prefix_cache", None)
        if cache is not None:
            cache.clear()
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
    any threads, through one continuous-batching engine (`batched`).
    Everything else (chat format, token counts, truncation, grammars) is
    `LlamaBackend`'s."""

    # The Llama object's own context is not used for generation here: keep it small.
    OWN_CONTEXT_TOKENS = 64

    def __init__(self, model: ModelDef, *, slots: int, n_threads: int | None = None,
                 budget_bytes: int | None = None):
        from .batched import MAX_PARALLEL, BatchEngine, kv_bytes_per_token

        if not 1 <= slots <= MAX_PARALLEL:
            raise ModelLoadError(f"model {model.name!r}: parallel must be between 1 and "
                                 f"{MAX_PARALLEL}, not {slots}")
        super().__init__(model, n_threads=n_threads, own_context=self.OWN_CONTEXT_TOKENS)
        try:
            per_token = kv_bytes_per_token(self.llama)
            self.kv_bytes = (slots + 1) * model.n_ctx * per_token
            check_fits(model, slots, self.size_bytes, per_token, budget_bytes)
            self.engine = BatchEngine(self.llama, slots=slots, n_ctx_seq=model.n_ctx,
                                      gpu=model.n_gpu_layers != 0, cache=self.prefix_cache)
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

    def decode_prompt(self, prompt: list[int], stop: list[str], sampler: Any,
                      request: GenerationRequest) -> tuple[str, Any]:
        """Hands the sequence to the batching engine, which decodes it alongside the
        other threads' sequences, and waits for it to end. (No drafting here: the
        batch's other sequences fill the decode steps that drafts would.)"""
        from .batched import SeqRequest
        from .decode import cut_at_stop

        decoded = self.engine.run(SeqRequest(prompt, sampler, request.max_tokens, stop,
                                             request.deadline, request.should_stop))
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


def parallel_of(model: ModelDef) -> int:
    """Sequences a local model serves at once: the row's ``parallel``, else 1 on the
    CPU, where one sequence already keeps the cores busy and batching gains little
    (docs/benchmarks.md, Model throughput), else `DEFAULT_GPU_PARALLEL` with GPU
    layers, where one sequence leaves most of the GPU idle (llama.cpp's own
    figure for 8 sequences, docs/benchmarks.md)."""
    if model.parallel:
        return model.parallel
    return 1 if model.n_gpu_layers == 0 else DEFAULT_GPU_PARALLEL


def local_warnings(model: ModelDef) -> list[str]:
    """`validate`'s warning for a local row with a server's settings."""
    if model.api_key_env or model.ca_bundle:
        return [f"model {model.name!r}: api_key_env and ca_bundle apply to http(s) "
                f"servers only; its source is a local model"]
    return []


def open_local(model: ModelDef, settings: OpenSettings) -> LlamaBackend:
    """The pool's opener for a local GGUF: with parallel > 1 the batched backend, its
    KV cache checked against the memory budget; else the sequential one."""
    slots = parallel_of(model)
    if slots > 1:
        return BatchedLlamaBackend(model, slots=slots, n_threads=settings.n_threads,
                                   budget_bytes=settings.budget_bytes)
    return LlamaBackend(model, n_threads=settings.n_threads)
