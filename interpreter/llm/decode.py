"""The sequential decode loop: token-by-token generation of one sequence on a
loaded ``llama_cpp.Llama``, reusing the KV cells of the prompt prefix shared with
the previous call or with a prompt in the model's prefix cache (`prefix_cache`),
sampling each token with a `token_sampling.TokenSampler` (the model's pick
first, the grammar only to check it), drafting by prompt lookup (`drafting`)
when that pays, and adding the tokens a grammar forces without sampling them
(jump-forward, `forced`; docs/adr/0007-jump-forward.md).

Not thread-safe: one `LlamaDecoder` per loaded model, used from one thread. The
batching engine (`batched`) samples with the same `TokenSampler`, one per
sequence, all on its decode-loop thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InternalError
from .backend import EngineError, GenerationRequest
from .drafting import LOOKUP_ANSWERS_KEPT, LOOKUP_MAX, DraftGain, LookupDrafter, lookup_tokens
from .prefix_cache import MIN_GAIN, PrefixCache, common_prefix, restore_seq, save_seq, seq_intact
from .token_sampling import SamplerBuffers, TokenSampler

# The most forced tokens added in one decode call (jump-forward, `forced`): a
# schema's keys and punctuation between two values are far fewer.
FORCED_MAX = 64

# Prompt tokens decoded per llama_decode call between stop checks: on a CPU this
# bounds the wait for a stop to about a second of prompt processing. Smaller
# chunks cost speed: a 320-token prompt in chunks of 64, a logits row after each,
# took 1.22x (Gemma-3-270M) and 1.18x (SmolLM2-135M) the time of chunks of 256
# with logits after the last, which were level with 512 (bench/bench_prompt_chunks.py,
# docs/benchmarks.md, Figures behind the model runtime's constants); a GPU wants
# bigger chunks still.
PROMPT_CHUNK_CPU = 256
PROMPT_CHUNK_GPU = 512


@dataclass
class Decoded:
    tokens: list[int]          # the generated tokens (without an end-of-generation token)
    text: str
    finish_reason: str         # stop | length | timeout | aborted
    prompt_tokens: int
    prompt_ms: float           # time spent decoding the prompt (after the reused prefix)
    reused_prefix: int         # prompt tokens whose KV cells were reused (the last call's
    #                            or a prefix-cache entry's), not decoded
    grammar_rejections: int = 0
    full_vocab_masks: int = 0
    wait_ms: float = 0.0       # queued for a sequence slot of the batching engine
    forced_tokens: int = 0     # tokens added by jump-forward, without sampling
    forced_spans: int = 0      # decode calls that carried forced tokens


@dataclass
class Jumps:
    """Jump-forward counts of one generation (see `Decoded`)."""

    tokens: int = 0
    spans: int = 0


class Interrupted(InternalError):
    """Prompt processing stopped: the reason is the finish_reason (timeout | aborted)."""


class LlamaDecoder:
    """Generation on one Llama: starts from the longest prompt prefix whose KV cells
    it has, those of the previous call (a re-ask repeats the first turns) or a
    prefix-cache entry's (a subject's earlier step, another prompt with the same
    head), decodes the rest in chunks, saves the prompt's state in the cache, then
    samples token by token.

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
                 prompt_threads: Callable[[], int] | None = None,
                 cache: PrefixCache | None = None):
        """prompt_threads: asked before each prompt how many threads to decode it on
        (the CPUs free now); None keeps the context's n_threads_batch. cache: the
        model's prefix cache (None: only the previous call's cells are reused)."""
        import llama_cpp.llama_cpp as lc

        self.lc = lc
        self.llama = llama
        self.cache = cache if cache is not None and cache.enabled else None
        self.prompt_threads = prompt_threads
        self.last_prompt_threads: int | None = None
        self.n_ctx = int(llama.n_ctx())
        self.vocab = lc.llama_model_get_vocab(llama.model)
        # One llama_decode takes at most the context's n_batch tokens.
        self.chunk = min(PROMPT_CHUNK_GPU if gpu else PROMPT_CHUNK_CPU, int(llama.n_batch))
        self.n_swa = int(lc.llama_model_n_swa(llama.model))   # 0: no sliding window
        self.buffers = SamplerBuffers(int(llama.n_vocab()))
        self.batch = lc.llama_batch_init(max(1 + FORCED_MAX + LOOKUP_MAX, int(llama.n_batch)),
                                         0, 1)
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

    def generate(self, prompt: Sequence[int], stop: Sequence[str], sampler: TokenSampler,
                 request: GenerationRequest) -> Decoded:
        """Generates after the prompt's tokens (the chat format's stop strings end
        the answer) for the request's max_tokens, deadline and should_stop, drafting
        up to the sampling's ``lookup_tokens`` at a time (`drafting.lookup_tokens`)."""
        max_tokens, deadline, should_stop = (request.max_tokens, request.deadline,
                                             request.should_stop)
        lookup = lookup_tokens(request.sampling)

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
        jumps = Jumps()
        tokens, reason = self._sample_loop(sampler, max_tokens, stop, interrupted, drafter,
                                           gain, jumps)
        if tokens:
            kept.append(tokens)
        text = self.llama.detokenize(tokens, prev_tokens=list(prompt)).decode("utf-8", "ignore")
        if reason == "stop" and stop:
            text = cut_at_stop(text, stop)
        return Decoded(tokens, text, reason, len(prompt), prompt_ms, reused,
                       sampler.rejections, sampler.full_masks,
                       forced_tokens=jumps.tokens, forced_spans=jumps.spans)

    def _decode_prompt(self, prompt: list[int], interrupted: Callable[[], str | None]) -> int:
        """Decodes the prompt after the longest prefix whose KV cells it can have (the
        context's own, or a cache entry's restored), saves the prompt's state in the
        cache; the reused length. A stop before or during a restore raises
        Interrupted, as one during a chunk does."""
        llama = self.llama
        limit = len(prompt) - 1   # the last prompt token is decoded for its logits
        keep = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), prompt, limit)
        entry, cached = self.cache.best(prompt, limit) if self.cache else (None, 0)
        memory = self.lc.llama_get_memory(llama.ctx)
        restored = None
        if entry is not None and cached >= keep + MIN_GAIN:
            keep = self._restore(entry, cached, interrupted)
            restored = (entry, keep) if keep else None
        elif keep > 0 and not (self.lc.llama_memory_seq_rm(memory, -1, keep, -1)
                               and seq_intact(llama.ctx, llama.model, 0, keep)):
            keep = 0
        if keep <= 0:
            llama.reset()
            self.lc.llama_memory_seq_rm(memory, -1, -1, -1)
        llama.n_tokens = keep
        batch_threads = self.prompt_threads() if self.prompt_threads else self.threads[1]
        self.last_prompt_threads = batch_threads
        self.lc.llama_set_n_threads(llama.ctx, self.threads[0], batch_threads)
        # A prompt longer than a sliding window (Gemma 3) cannot be stored whole
        # (prefix_cache.save_seq); its head up to the window's length can, saved when
        # the decode gets there, and serves the prompts that share a shorter head.
        window = self.n_swa if self.cache is not None and keep < self.n_swa < len(prompt) \
            else None
        for i, end in chunk_bounds(keep, len(prompt), self.chunk, window):
            reason = interrupted()
            if reason is not None:
                raise Interrupted(reason)
            self._decode_prompt_chunk(prompt[i:end], wants_logits=end == len(prompt))
            if end == window and self.cache is not None:
                save_seq(self.cache, llama.ctx, 0, prompt[:end], restored)
        if self.cache is not None:
            save_seq(self.cache, llama.ctx, 0, prompt, restored)
        return keep

    def _decode_prompt_chunk(self, chunk: list[int], wants_logits: bool) -> None:
        """Decodes a prompt chunk after the context's cells, with logits for its last
        row only when the sampler will read them (the prompt's last chunk). Llama.eval
        asks for them after every chunk, and one row of Gemma 3's 262,144 logits cost
        about what 6 of its prompt tokens do (11 ms against 1.9 ms a token on 2
        threads, bench/bench_prompt_chunks.py)."""
        llama = self.llama
        base = llama.n_tokens
        self._decode_rows(chunk, base, len(chunk) - 1 if wants_logits else len(chunk))
        llama.input_ids[base:base + len(chunk)] = chunk
        llama.n_tokens = base + len(chunk)

    def _restore(self, entry: Any, keep: int, interrupted: Callable[[], str | None]) -> int:
        """Loads a cache entry's first keep tokens into the context; the tokens kept
        (0 when llama.cpp refused it or its sliding windows were cut). The context's
        record of its cells (input_ids, n_tokens) follows even when a stop then
        raises Interrupted, so the next call starts from what is really there."""
        llama, cache = self.llama, self.cache
        assert cache is not None
        reason = interrupted()
        if reason is not None:
            raise Interrupted(reason)
        llama.n_tokens = 0           # the cells are being replaced: trust none of them
        if restore_seq(llama.ctx, entry, 0, keep) \
                and seq_intact(llama.ctx, llama.model, 0, keep):
            llama.input_ids[:keep] = entry.tokens[:keep]
            llama.n_tokens = keep
            cache.hit(entry, keep)
        else:
            cache.refuse(entry)
            keep = 0
        reason = interrupted()
        if reason is not None:
            raise Interrupted(reason)
        return keep

    def _sample_loop(self, sampler: TokenSampler, max_tokens: int, stop: Sequence[str],
                     interrupted: Callable[[], str | None], drafter: LookupDrafter | None,
                     gain: DraftGain, jumps: Jumps) -> tuple[list[int], str]:
        """Samples token by token. Jump-forward: after each taken token, the tokens
        the grammar forces next (`TokenSampler.forced`) are taken too and decoded
        in the same llama_decode as that token, with logits for the last row only;
        when the grammar admits nothing more, the answer ends there ("stop")."""
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

        def force(pending: list[int]) -> str | None:
            """Takes the tokens the grammar forces now, after pending (taken, not yet
            decoded), within max_tokens and the window; why the answer ends, if it does."""
            room = min(max_tokens - len(tokens), FORCED_MAX,
                       self.n_ctx - 1 - llama.n_tokens - len(pending))
            for forced in sampler.forced(room):
                if not sampler.allows(forced):
                    break
                jumps.tokens += 1
                pending.append(forced)
                reason = take(forced)
                if reason is not None:
                    return reason
            return "stop" if sampler.must_end() else None

        # Drafts are checked in batches of a few tokens: on the generation threads,
        # which ran such small batches faster than the prompt threads (docs/benchmarks.md).
        self.lc.llama_set_n_threads(llama.ctx, self.threads[0], self.threads[0])
        # The first token is the model's own pick from the prompt's logits, forced or
        # not: how it opens the answer (`{` or `{"`) is its choice, at no extra call.
        token = sampler.sample(llama.ctx)
        while True:
            reason = interrupted()
            if reason is not None:
                return tokens, reason
            reason = take(token)
            if reason is None and llama.n_tokens + 1 >= self.n_ctx:
                reason = "length"
            if reason is None:
                pending = [token]
                reason = force(pending)
            if reason is not None:
                return tokens, reason
            jumped = len(pending) > 1
            jumps.spans += jumped
            room = min(max_tokens - len(tokens), self.n_ctx - llama.n_tokens - len(pending) - 1)
            draft = drafter.propose(room) if drafter is not None else []
            step_started = time.perf_counter()
            if not (draft and gain.wants_draft()):
                self._decode_span(pending)
                token = sampler.sample(llama.ctx)
                if drafter is not None and not jumped:
                    gain.record_single(time.perf_counter() - step_started)
                continue
            before = len(tokens)
            token, reason = self._verify(pending, draft, sampler, take)
            # gained: the kept drafted tokens and the pick after them
            gain.record_verify(time.perf_counter() - step_started, len(tokens) - before + 1)
            if reason is not None:
                return tokens, reason

    def _decode_span(self, pending: list[int]) -> None:
        """Decodes taken tokens (a sampled one, the forced ones after it) in one call,
        logits for the last only. One token goes through Llama.eval as before
        jump-forward, so an answer without forced text decodes exactly as then."""
        llama = self.llama
        if len(pending) == 1:
            llama.eval(pending)
            return
        base = llama.n_tokens
        self._decode_rows(pending, base, len(pending) - 1)
        end = base + len(pending)
        llama.input_ids[base:end] = pending
        llama.n_tokens = end

    def _verify(self, pending: list[int], draft: list[int], sampler: TokenSampler,
                take: Callable[[int], str | None]) -> tuple[int, str | None]:
        """Decodes the pending tokens (the last sampled one and those forced after it)
        and the draft in one batch and keeps the drafted tokens the sampler picks
        itself, in order. Returns the next token to take (the sampler's pick after
        the kept ones) and None, or the reason the answer ended on a kept drafted
        token."""
        llama = self.llama
        base = llama.n_tokens
        row_tokens = [*pending, *draft]
        last = len(pending) - 1              # the row whose logits check draft[0]
        self._decode_rows(row_tokens, base, last)
        self.drafted += len(draft)
        for j in range(len(draft) + 1):
            pick = sampler.sample(llama.ctx, last + j)
            if j == len(draft) or pick != draft[j]:
                self._keep(base, row_tokens[:last + j + 1])
                return pick, None
            self.accepted += 1
            reason = take(pick)
            if reason is not None:
                self._keep(base, row_tokens[:last + j + 2])
                return pick, reason
        raise AssertionError("unreachable: the last row always ends the draft")

    def _decode_rows(self, tokens: list[int], base: int, first_logits: int = 0) -> None:
        """One llama_decode of tokens at positions base.., with logits for the rows
        from first_logits on."""
        batch = self.batch
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = base + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i >= first_logits else 0
        batch.n_tokens = len(tokens)
        rc = self.lc.llama_decode(self.llama.ctx, batch)
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc} for a batch of {len(tokens)} tokens")

    def _keep(self, base: int, kept: list[int]) -> None:
        """The KV cells end with kept (decoded at base..): the rest of the draft's go,
        and the Llama's record of its cells (for the next prompt's prefix) follows."""
        llama = self.llama
        end = base + len(kept)
        self.lc.llama_memory_seq_rm(self.lc.llama_get_memory(llama.ctx), -1, end, -1)
        llama.input_ids[base:end] = kept
        llama.n_tokens = end


def chunk_bounds(start: int, end: int, chunk: int,
                 cut: int | None = None) -> list[tuple[int, int]]:
    """The (from, to) of each prompt chunk from start to end, one ending at cut too."""
    bounds = []
    i = start
    while i < end:
        j = min(i + chunk, end)
        if cut is not None and i < cut < j:
            j = cut
        bounds.append((i, j))
        i = j
    return bounds


def ends_with_stop(llama: Any, recent: list[int], stop: Sequence[str]) -> bool:
    """Whether the text of the last few generated tokens contains a stop string."""
    text = llama.detokenize(recent).decode("utf-8", "ignore")
    return any(s and s in text for s in stop)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """text up to the first stop string."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text
