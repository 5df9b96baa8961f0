"""Token-by-token generation on a loaded ``llama_cpp.Llama`` with llama.cpp's low-level
sampler API, so that constrained decoding costs about what unconstrained does.

llama-cpp-python builds its sampler chain with the grammar *before* top-k and
greedy, so for every token the grammar checks the whole vocabulary (262,144
entries for Gemma 3): one such pass costs more than a decode step on a small
model. Here each token is sampled from the model's own distribution first
(``chain``: penalties, then greedy or top-k/typical/top-p/min-p/temperature/dist,
the same order as llama-cpp-python's), and only the chosen token is checked
against the grammar (a one-entry candidate array). When the grammar rejects it,
the grammar is applied to the 64 most likely tokens and the chain samples among
those it allows; when none of them is allowed, to the top 1,024, 16,384, then
65,536 (`TOP_TIERS`); only when none of those is allowed does the grammar mask
the whole vocabulary. The accepted token then advances the grammar and the chain.
With a greedy chain and no penalties, the model's pick is the arg-max of the
logits, read without filling a candidate array.

At temperature 0 this picks exactly the token the grammar-first chain picks: the
most likely token that the grammar allows (if any of the k most likely tokens
is allowed, the best allowed token is among them). At temperature > 0 it follows
llama.cpp's common sampler (sample, check, resample on rejection), seeded per
call so that a rerun with the same seed repeats; the one difference is that a
resample first draws among the allowed tokens of the top 64, whose probabilities
are then normalised over those tokens only (the chain's top_k is 40 by default,
so the candidates rarely differ).

Not thread-safe: one `LlamaDecoder` per loaded model, used from one thread. The
batched decoder (`interpreter.batched`) samples with the same `TokenSampler`, one
per sequence, all on its decode-loop thread.

`timed_sampling` measures the samplers' time for benchmarks
(`bench/bench_time_split.py`); it is off unless a block turns it on.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

# llama_token_data: {int32 id; float logit; float p;}
TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
# How many of the most likely tokens the grammar sees, tier by tier, when it rejects
# the sampled token, before it masks the whole vocabulary: a rejection usually has
# an allowed token among the top 64 (a quote, a brace, a digit). When it has not,
# the allowed token can rank far down: after "{ " Gemma 3 wants a newline and the
# grammar a '"', which ranks 37,000-59,000th of its 262,144 tokens. Checking k
# candidates costs about k/n_vocab of a full pass (41-87 ms for Gemma 3 here, more
# than a decode step). Counted over 8 extraction prompts (greedy, 48 tokens):
# full-vocabulary passes fell from 34 to 2 for Gemma 3 and from 28 to 0 for
# SmolLM2 against the top 64 alone, with identical outputs.
TOP_TIERS = (64, 1024, 16384, 65536)
# Prompt tokens decoded per llama_decode call between stop checks: on a CPU this
# bounds the wait for a stop to about a second of prompt processing, and chunks of
# 16 to 512 tokens ran at the same speed; a GPU wants bigger chunks.
PROMPT_CHUNK_CPU = 64
PROMPT_CHUNK_GPU = 512


@dataclass
class Decoded:
    tokens: list[int]          # the generated tokens (without an end-of-generation token)
    text: str
    finish_reason: str         # stop | length | timeout | aborted
    prompt_tokens: int
    prompt_ms: float           # time spent decoding the prompt (after the reused prefix)
    reused_prefix: int         # prompt tokens whose KV cells were kept from the last call
    grammar_rejections: int = 0
    full_vocab_masks: int = 0
    wait_ms: float = 0.0       # queued for a sequence slot of the batching engine


class SamplerBuffers:
    """The candidate arrays a sampler fills for every token, allocated once per loaded
    model instead of once per generation (for Gemma 3 the full array is 3 MB).

    Shared by every `TokenSampler` of one model; they must sample one at a time
    (one decode loop per model), which both decoders here guarantee.
    """

    def __init__(self, n_vocab: int):
        self.n_vocab = n_vocab
        self.full = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self.ids = np.arange(n_vocab, dtype=np.intc)
        self.top = np.zeros(min(max(TOP_TIERS), n_vocab), dtype=TOKEN_DATA)
        self.one = np.zeros(1, dtype=TOKEN_DATA)


class TokenSampler:
    """The model's distribution first; the grammar only to check and, on rejection, mask."""

    def __init__(self, llama: Any, sampling: dict[str, Any], seed: int,
                 grammar_gbnf: str | None, buffers: SamplerBuffers | None = None):
        import llama_cpp.llama_cpp as lc

        self.lc = lc
        self.n_vocab = int(llama.n_vocab())
        vocab = lc.llama_model_get_vocab(llama.model)
        self.chain = build_chain(lc, sampling, seed, self.n_vocab)
        self.argmax_only = is_plain_greedy(sampling)
        self.grammar = None
        self.grammar_key = grammar_gbnf or ""     # which answers are alike (for drafting)
        if grammar_gbnf is not None:
            self.grammar = lc.llama_sampler_init_grammar(vocab, grammar_gbnf.encode("utf-8"),
                                                         b"root")
            if not self.grammar:
                self.close()
                raise ValueError("llama.cpp could not parse the grammar for the output schema")
        self.buf = buffers if buffers is not None else SamplerBuffers(self.n_vocab)
        self.rejections = 0
        self.full_masks = 0

    def close(self) -> None:
        for name in ("chain", "grammar"):
            sampler = getattr(self, name, None)
            if sampler:
                self.lc.llama_sampler_free(sampler)
            setattr(self, name, None)

    # -------------------------------------------------------------- sampling

    def sample(self, ctx: Any, index: int = -1) -> int:
        """The next token from the logits of batch row `index` (-1: the last row)."""
        logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, index),
                                       shape=(self.n_vocab,))
        if self.argmax_only:
            token = int(np.argmax(logits))    # what the greedy sampler picks (first of ties)
        else:
            token = self._choose(self.chain, self._fill_full(logits), self.n_vocab)
        if self.grammar is None or self._grammar_allows(token):
            return token
        self.rejections += 1
        for k in TOP_TIERS:
            if k >= self.n_vocab:
                break
            allowed = self._sample_allowed_top(logits, k)
            if allowed is not None:
                return allowed
        self.full_masks += 1
        return self._sample_masked_full(logits)

    def accept(self, token: int) -> None:
        self.lc.llama_sampler_accept(self.chain, token)
        if self.grammar is not None:
            self.lc.llama_sampler_accept(self.grammar, token)

    def _fill_full(self, logits: np.ndarray) -> np.ndarray:
        full = self.buf.full
        full["id"] = self.buf.ids
        full["logit"] = logits
        full["p"] = 0.0
        return full

    def _grammar_allows(self, token: int) -> bool:
        one = self.buf.one
        one[0] = (token, 1.0, 0.0)
        self._apply(self.grammar, one, 1)
        return bool(np.isfinite(one[0]["logit"]))

    def _sample_masked_full(self, logits: np.ndarray) -> int:
        """The chain's pick after the grammar has masked the whole vocabulary."""
        size = self._apply(self.grammar, self._fill_full(logits), self.n_vocab)[0]
        if size == 0:   # pragma: no cover - llama.cpp keeps the array size
            raise RuntimeError("the grammar allows no token")
        return self._choose(self.chain, self.buf.full, self.n_vocab)

    def _sample_allowed_top(self, logits: np.ndarray, k: int) -> int | None:
        """The chain's pick among the k most likely tokens that the grammar allows; None
        when the grammar allows none of them."""
        best = np.argpartition(logits, -k)[-k:]
        top = self.buf.top[:k]
        top["id"] = best
        top["logit"] = logits[best]
        top["p"] = 0.0
        self._apply(self.grammar, top, k)
        allowed = top[np.isfinite(top["logit"])]
        if len(allowed) == 0:
            return None
        n = len(allowed)
        self.buf.top[:n] = allowed
        return self._choose(self.chain, self.buf.top, n)

    def _apply(self, sampler: Any, buf: np.ndarray, size: int) -> tuple[int, int]:
        """Applies a sampler in place to buf[:size]; (size, selected) afterwards."""
        lc = self.lc
        array = lc.llama_token_data_array(
            data=buf.ctypes.data_as(lc.llama_token_data_p), size=size, selected=-1,
            sorted=False)
        lc.llama_sampler_apply(sampler, ctypes.byref(array))
        self._last = array
        return int(array.size), int(array.selected)

    def _choose(self, chain: Any, buf: np.ndarray, size: int) -> int:
        _, selected = self._apply(chain, buf, size)
        # Read through the array's own pointer: a sampler may point it elsewhere.
        return int(self._last.data[selected].id)


@dataclass
class SamplingClock:
    """Where the sampling time went while `timed_sampling` was on, in seconds."""

    sample_s: float = 0.0     # choosing the tokens: the model's pick and the grammar
    grammar_s: float = 0.0    # of sample_s: the grammar's checks and the fallbacks they caused
    setup_s: float = 0.0      # building samplers (the chain, and the grammar from its GBNF)
    tokens: int = 0           # tokens sampled


# What timed_sampling wraps: TokenSampler's method -> the clock field it adds to.
_TIMED_METHODS = {"__init__": "setup_s", "sample": "sample_s", "_grammar_allows": "grammar_s",
                  "_sample_allowed_top": "grammar_s", "_sample_masked_full": "grammar_s"}


@contextmanager
def timed_sampling() -> Iterator[SamplingClock]:
    """Times every TokenSampler's work while the block runs (for benchmarks: where a
    generation's time goes). Off by default, and it adds nothing to sampling when
    off: the block swaps timed versions of the methods in and the plain ones back.
    One block at a time; the sums are exact when one thread samples (the
    sequential decoder, the batched decoder's loop)."""
    clock = SamplingClock()
    plain = {name: TokenSampler.__dict__[name] for name in _TIMED_METHODS}
    for name, field in _TIMED_METHODS.items():
        setattr(TokenSampler, name, _timed(plain[name], clock, field, name == "sample"))
    try:
        yield clock
    finally:
        for name, method in plain.items():
            setattr(TokenSampler, name, method)


def _timed(method: Callable[..., Any], clock: SamplingClock, field: str,
           counts_token: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            setattr(clock, field, getattr(clock, field) + time.perf_counter() - started)
            if counts_token:
                clock.tokens += 1
    return timed


def is_plain_greedy(sampling: dict[str, Any]) -> bool:
    """Whether the chain is the greedy sampler alone (temperature 0, no penalties)."""
    return (float(sampling.get("temperature", 0.0)) <= 0.0
            and float(sampling.get("repeat_penalty", 1.0)) == 1.0
            and float(sampling.get("frequency_penalty", 0.0)) == 0.0
            and float(sampling.get("presence_penalty", 0.0)) == 0.0)


def build_chain(lc: Any, sampling: dict[str, Any], seed: int, n_vocab: int) -> Any:
    """llama-cpp-python's sampler chain without the grammar, in the same order."""
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        lc.llama_sampler_chain_add(chain, sampler)

    repeat = float(sampling.get("repeat_penalty", 1.0))
    freq = float(sampling.get("frequency_penalty", 0.0))
    present = float(sampling.get("presence_penalty", 0.0))
    if (repeat, freq, present) != (1.0, 0.0, 0.0):
        add(lc.llama_sampler_init_penalties(n_vocab, 64, repeat, freq, present))
    temp = float(sampling.get("temperature", 0.0))
    if temp <= 0.0:
        add(lc.llama_sampler_init_greedy())
        return chain
    add(lc.llama_sampler_init_top_k(int(sampling.get("top_k", 40))))
    add(lc.llama_sampler_init_typical(float(sampling.get("typical_p", 1.0)), 1))
    add(lc.llama_sampler_init_top_p(float(sampling.get("top_p", 0.95)), 1))
    add(lc.llama_sampler_init_min_p(float(sampling.get("min_p", 0.05)), 1))
    add(lc.llama_sampler_init_temp(temp))
    add(lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


# Prompt-lookup drafting (see `LookupDrafter`): the most tokens proposed at once by
# default (a model's sampling may set `lookup_tokens`, up to LOOKUP_MAX), and the
# n-gram lengths that are looked up (longest first). Verifying k drafted tokens
# costs one decode of k + 1 tokens: on a 2-core CPU, 1 thread, a decode of 2 tokens
# took 1.3x one token for both default models, of 4 tokens 2.0x (SmolLM2-135M) and
# 1.6x (Gemma-3-270M, whose 262,144-entry output layer runs per row). Over 3001's
# Extract prompts on Gemma, drafts of 1, 2, 3, 6 and 8 tokens took 0.83, 0.75,
# 0.76, 0.88 and 0.90 of the time without drafting (docs/benchmarks.md).
LOOKUP_TOKENS = 2
LOOKUP_MAX = 16
LOOKUP_NGRAMS = (4, 3, 2)
# Answers of one grammar kept as lookup text for the next calls with that grammar:
# a schema's keys and punctuation come back in every answer.
LOOKUP_ANSWERS_KEPT = 8
# Whether drafting pays is measured, not assumed: on another 2-core CPU (an AMD
# EPYC) drafts of 2 tokens made Gemma-3-270M's free-text answers 1.27x slower
# (bench_throughput --lookup-tokens 0/2, docs/benchmarks.md). DraftGain decides per
# kind of answer after this many steps of each kind, and when it has turned
# drafting off, still drafts one available draft in DRAFT_PROBE_EVERY to notice
# when it pays again, twice as rarely after each probe that finds it still does
# not (up to one in DRAFT_PROBE_MAX): there, a check of 3 tokens that kept 2.9 of
# them took 60 ms against 14 ms for one token (Gemma's 262,144-entry output layer
# runs for every row), so each probe costs about a step.
DRAFT_MIN_STEPS = 8
DRAFT_PROBE_EVERY = 16
DRAFT_PROBE_MAX = 512
DRAFT_EWMA = 0.1


@dataclass
class DraftGain:
    """Whether prompt-lookup drafting makes one kind of answer (one grammar) faster
    on this machine: the time per token of a step that checks a draft (a wider
    decode, gaining the kept drafted tokens and the pick after them) against that
    of a plain one-token step, both as moving averages."""

    single_s: float = 0.0       # seconds per one-token step
    verify_s: float = 0.0       # seconds per draft-checking step
    verify_tokens: float = 0.0  # tokens a draft-checking step adds to the answer
    singles: int = 0
    verifies: int = 0
    skipped: int = 0            # drafts not checked because drafting did not pay
    probe_every: int = DRAFT_PROBE_EVERY
    since_probe: int = 0

    def record_single(self, seconds: float) -> None:
        self.single_s = _moving(self.single_s, seconds, self.singles)
        self.singles += 1

    def record_verify(self, seconds: float, tokens: int) -> None:
        self.verify_s = _moving(self.verify_s, seconds, self.verifies)
        self.verify_tokens = _moving(self.verify_tokens, float(tokens), self.verifies)
        self.verifies += 1

    def pays(self) -> bool:
        """Until both kinds of step were measured enough: yes (drafting is the default)."""
        if self.singles < DRAFT_MIN_STEPS or self.verifies < DRAFT_MIN_STEPS:
            return True
        return self.verify_s / max(self.verify_tokens, 1.0) <= self.single_s

    def wants_draft(self) -> bool:
        """Whether to check a draft that is available now: when drafting pays, and
        now and then when it does not, to keep measuring it. Where drafts come at
        nearly every step, plain steps are taken on purpose until there are
        enough of them to compare."""
        if self.verifies >= DRAFT_MIN_STEPS and self.singles < DRAFT_MIN_STEPS:
            return False
        if self.pays():
            self.probe_every, self.since_probe = DRAFT_PROBE_EVERY, 0
            return True
        self.since_probe += 1
        if self.since_probe < self.probe_every:
            self.skipped += 1
            return False
        self.since_probe = 0
        self.probe_every = min(2 * self.probe_every, DRAFT_PROBE_MAX)
        return True


def _moving(mean: float, value: float, seen: int) -> float:
    return value if seen == 0 else mean + DRAFT_EWMA * (value - mean)


class LookupDrafter:
    """Proposes the tokens that followed the latest occurrence of the last few tokens,
    in the text the answer is likely to copy: recent answers under the same grammar,
    the prompt, and the answer so far (later text wins a tie).

    This is llama.cpp's prompt-lookup drafting (`examples/lookup`): an extraction
    answer copies names, titles and phrases from its prompt, and a JSON answer
    repeats its schema's keys. The model verifies every drafted token (see
    `LlamaDecoder`), so a draft changes the speed, never the answer."""

    def __init__(self, answers: Sequence[Sequence[int]], prompt: Sequence[int], limit: int):
        """answers: earlier answers under the same grammar; the answer being generated
        continues the prompt, and is `add`ed token by token as it is accepted."""
        self.limit = limit
        self.tokens: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}
        for answer in answers:
            self.add(answer)
            self.tokens.append(-1)      # no n-gram or draft runs from one text into the next
        self.add(prompt)

    def add(self, tokens: Sequence[int]) -> None:
        """Appends tokens. Each n-gram is indexed when the token after it arrives,
        pointing at that token: the n-gram the text now ends with is not indexed
        yet, so a lookup of it finds an earlier occurrence, not itself."""
        seq, index = self.tokens, self.index
        for token in tokens:
            at = len(seq)
            for n in LOOKUP_NGRAMS:
                if at >= n:
                    index[tuple(seq[at - n:at])] = at
            seq.append(int(token))

    def propose(self, room: int) -> list[int]:
        """Up to min(limit, room) tokens expected next (empty: no earlier occurrence of
        the last n tokens, for any n of LOOKUP_NGRAMS)."""
        size = min(self.limit, room)
        if size <= 0:
            return []
        seq = self.tokens
        for n in LOOKUP_NGRAMS:
            start = self.index.get(tuple(seq[-n:]))
            if start is None:
                continue
            draft = []
            for token in self.tokens[start:start + size]:
                if token < 0:
                    break
                draft.append(token)
            if draft:
                return draft
        return []


class Interrupted(Exception):
    """Prompt processing stopped: the reason is the finish_reason (timeout | aborted)."""


class LlamaDecoder:
    """Generation on one Llama: keeps the KV cells of the longest prompt prefix shared
    with the previous call (a re-ask repeats the first turns), decodes the rest in
    chunks, then samples token by token.

    With ``lookup`` > 0 it drafts: when the last tokens occurred before (in the
    prompt, the answer so far, or recent answers under the same grammar;
    `LookupDrafter`), the tokens that followed them then are decoded together with
    the last sampled token in one batch, and the sampler checks them one by one
    against the logits of each row: a drafted token is kept only when the sampler,
    grammar included, picks exactly it there. The first mismatch ends the draft;
    the sampler's pick there is the next token, and the KV cells of the rejected
    drafted tokens are removed. The sampler samples the same positions in the same
    order as without drafting, so the answer is the same (up to the floating-point
    order of a batched decode, as with continuous batching); drafting only saves
    decode steps when drafts are right, and costs a wider decode when they are not.
    """

    def __init__(self, llama: Any, *, gpu: bool,
                 prompt_threads: Callable[[], int] | None = None):
        """prompt_threads: asked before each prompt how many threads to decode it on
        (the CPUs free now); None keeps the context's n_threads_batch."""
        import llama_cpp.llama_cpp as lc

        self.lc = lc
        self.llama = llama
        self.prompt_threads = prompt_threads
        self.last_prompt_threads: int | None = None
        self.n_ctx = int(llama.n_ctx())
        self.vocab = lc.llama_model_get_vocab(llama.model)
        self.chunk = PROMPT_CHUNK_GPU if gpu else PROMPT_CHUNK_CPU
        self.buffers = SamplerBuffers(int(llama.n_vocab()))
        self.batch = lc.llama_batch_init(LOOKUP_MAX + 1, 0, 1)
        # Recent answers per grammar (the GBNF text; "" for free text), for drafting,
        # and whether drafting pays for that grammar's answers.
        self.answers: dict[str, deque[list[int]]] = {}
        self.gains: dict[str, DraftGain] = {}
        self.threads = (int(llama.context_params.n_threads),
                        int(llama.context_params.n_threads_batch))
        self.drafted = self.accepted = 0     # drafted tokens, and those the model kept

    def close(self) -> None:
        if self.batch is not None:
            self.lc.llama_batch_free(self.batch)
            self.batch = None

    def generate(self, prompt: Sequence[int], sampler: TokenSampler, *, max_tokens: int,
                 stop: Sequence[str] = (), deadline: float | None = None,
                 should_stop: Callable[[], bool] | None = None, lookup: int = 0) -> Decoded:
        def interrupted() -> str | None:
            if should_stop is not None and should_stop():
                return "aborted"
            if deadline is not None and time.monotonic() >= deadline:
                return "timeout"
            return None

        started = time.perf_counter()
        try:
            reused = self._decode_prompt(list(prompt), interrupted)
        except Interrupted as exc:
            return Decoded([], "", str(exc), len(prompt), (time.perf_counter() - started) * 1000,
                           0)
        prompt_ms = (time.perf_counter() - started) * 1000
        kept = self.answers.setdefault(sampler.grammar_key, deque(maxlen=LOOKUP_ANSWERS_KEPT))
        drafter = LookupDrafter(kept, prompt, min(lookup, LOOKUP_MAX)) if lookup > 0 else None
        gain = self.gains.setdefault(sampler.grammar_key, DraftGain())
        tokens, reason = self._sample_loop(sampler, max_tokens, stop, interrupted, drafter,
                                           gain)
        if tokens:
            kept.append(tokens)
        text = self.llama.detokenize(tokens, prev_tokens=list(prompt)).decode("utf-8", "ignore")
        if reason == "stop" and stop:
            text = cut_at_stop(text, stop)
        return Decoded(tokens, text, reason, len(prompt), prompt_ms, reused,
                       sampler.rejections, sampler.full_masks)

    def _decode_prompt(self, prompt: list[int], interrupted: Callable[[], str | None]) -> int:
        """Decodes the prompt after the prefix already in the KV cache; the reused length."""
        llama = self.llama
        cached = [int(t) for t in llama.input_ids[: llama.n_tokens]]
        keep = 0
        for a, b in zip(cached, prompt, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(prompt) - 1)   # the last prompt token is decoded for its logits
        memory = self.lc.llama_get_memory(llama.ctx)
        if keep <= 0 or not self.lc.llama_memory_seq_rm(memory, -1, keep, -1):
            keep = 0
            llama.reset()
        llama.n_tokens = keep
        batch_threads = self.prompt_threads() if self.prompt_threads else self.threads[1]
        self.last_prompt_threads = batch_threads
        self.lc.llama_set_n_threads(llama.ctx, self.threads[0], batch_threads)
        for i in range(keep, len(prompt), self.chunk):
            reason = interrupted()
            if reason is not None:
                raise Interrupted(reason)
            llama.eval(prompt[i:i + self.chunk])
        return keep

    def _sample_loop(self, sampler: TokenSampler, max_tokens: int, stop: Sequence[str],
                     interrupted: Callable[[], str | None],
                     drafter: LookupDrafter | None, gain: DraftGain) -> tuple[list[int], str]:
        llama = self.llama
        tokens: list[int] = []
        tail_tokens = max((len(s) for s in stop), default=0) + 2

        def take(token: int) -> str | None:
            """Accepts a token into the answer; why the answer ends with it, if it does."""
            if self.lc.llama_vocab_is_eog(self.vocab, token):
                return "stop"
            sampler.accept(token)
            tokens.append(token)
            if drafter is not None:
                drafter.add((token,))
            if stop and ends_with_stop(llama, tokens[-tail_tokens:], stop):
                return "stop"
            if len(tokens) >= max_tokens:
                return "length"
            return None

        # Drafts are checked in batches of a few tokens: on the generation threads,
        # which ran such small batches faster than the prompt threads (bench above).
        self.lc.llama_set_n_threads(llama.ctx, self.threads[0], self.threads[0])
        token = sampler.sample(llama.ctx)
        while True:
            reason = interrupted()
            if reason is not None:
                return tokens, reason
            reason = take(token)
            if reason is None and llama.n_tokens + 1 >= self.n_ctx:
                reason = "length"
            if reason is not None:
                return tokens, reason
            room = min(max_tokens - len(tokens), self.n_ctx - llama.n_tokens - 2)
            draft = drafter.propose(room) if drafter is not None else []
            step_started = time.perf_counter()
            if not (draft and gain.wants_draft()):
                llama.eval([token])
                token = sampler.sample(llama.ctx)
                if drafter is not None:
                    gain.record_single(time.perf_counter() - step_started)
                continue
            before = len(tokens)
            token, reason = self._verify(token, draft, sampler, take)
            # gained: the kept drafted tokens and the pick after them
            gain.record_verify(time.perf_counter() - step_started, len(tokens) - before + 1)
            if reason is not None:
                return tokens, reason

    def _verify(self, token: int, draft: list[int], sampler: TokenSampler,
                take: Callable[[int], str | None]) -> tuple[int, str | None]:
        """Decodes token and the draft in one batch and keeps the drafted tokens the
        sampler picks itself, in order. Returns the next token to take (the
        sampler's pick after the kept ones) and None, or the reason the answer
        ended on a kept drafted token."""
        llama = self.llama
        base = llama.n_tokens
        row_tokens = [token, *draft]
        self._decode_rows(row_tokens, base)
        self.drafted += len(draft)
        for j in range(len(row_tokens)):
            pick = sampler.sample(llama.ctx, j)
            if j == len(draft) or pick != draft[j]:
                self._keep(base, row_tokens[:j + 1])
                return pick, None
            self.accepted += 1
            reason = take(pick)
            if reason is not None:
                self._keep(base, row_tokens[:j + 2])
                return pick, reason
        raise AssertionError("unreachable: the last row always ends the draft")

    def _decode_rows(self, tokens: list[int], base: int) -> None:
        """One llama_decode of tokens at positions base.., with logits for every row."""
        batch = self.batch
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = base + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        batch.n_tokens = len(tokens)
        rc = self.lc.llama_decode(self.llama.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for a draft of {len(tokens)} tokens")

    def _keep(self, base: int, kept: list[int]) -> None:
        """The KV cells end with kept (decoded at base..): the rest of the draft's go,
        and the Llama's record of its cells (for the next prompt's prefix) follows."""
        llama = self.llama
        end = base + len(kept)
        self.lc.llama_memory_seq_rm(self.lc.llama_get_memory(llama.ctx), -1, end, -1)
        llama.input_ids[base:end] = kept
        llama.n_tokens = end


def ends_with_stop(llama: Any, recent: list[int], stop: Sequence[str]) -> bool:
    """Whether the text of the last few generated tokens contains a stop string."""
    text = llama.detokenize(recent).decode("utf-8", "ignore")
    return any(s and s in text for s in stop)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """text up to the first stop string."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text
