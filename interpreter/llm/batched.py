"""Continuous batching: one llama.cpp context serves up to N sequences at once.

``llama_backend.BatchedLlamaBackend`` is the backend of a local GGUF whose model row
asks for ``parallel`` > 1. The model actor then calls its ``generate`` from up
to N threads at once (one per subject of the wave); each call becomes a
`SeqRequest` of one `BatchEngine`, and waits for it to finish.

The engine owns one llama.cpp context with ``n_seq_max`` = N + 1 and a unified
KV cache of (N + 1) x the model's ``n_ctx`` cells: every sequence may use the
whole ``n_ctx`` (prompt plus ``max_tokens``), and one more sequence holds a
shared prompt prefix. One decode-loop thread does all the work on it. Each step:

1. sequences whose caller has stopped (``should_stop``) or whose deadline has
   passed end now, with the tokens they have;
2. waiting calls take the free sequence slots, in the order they came. The
   model lane starts the next wave of the same model once every subject of the
   current one has started (cross-wave continuity, `interpreter.model_lane`):
   its calls wait here behind the running sequences, so the slot a finished
   sequence frees at a wave's tail goes to the next wave's first subject;
3. one ``llama_batch`` is built: the last sampled token of every generating
   sequence with the tokens its grammar forced after it (jump-forward,
   `forced`), then up to one prompt chunk (256 tokens on a CPU, 512 on a GPU) of
   the sequences still reading their prompts, so that a new prompt never holds
   the running sequences up for more than a chunk;
4. one ``llama_decode``;
5. every sequence whose logits came out samples its next token with its own
   `TokenSampler` (its sampler chain, seed and grammar, check-then-mask as in
   `token_sampling`) and checks its own stop strings, end-of-generation token,
   ``max_tokens`` and window, then takes the tokens its grammar forces next
   (decoded with that token in the next step; an answer the grammar says is
   complete ends there). A finished sequence frees its KV cells
   (``llama_memory_seq_rm``) and its slot goes to the next waiting call at once.

Prompt-prefix reuse: the prompts of one step share their head (the chat
format's opening, a system prompt, the template's first lines). When a new
prompt shares at least `MIN_SHARED_PREFIX` tokens with the prefix sequence,
those KV cells are copied to its sequence (``llama_memory_seq_cp``: with a
unified cache the cells are shared, not duplicated) and only the rest is
decoded. When it does not, and it shares a head with another waiting or recent
prompt, that head is decoded once into the prefix sequence first. Beyond the
prompts in flight, the model's prefix cache (`prefix_cache`) keeps the state of
recent prompts: when an entry shares a longer head with a new prompt than the
prefix sequence does, it is restored into the prompt's own sequence
(``llama_state_seq_set_data``) and cut back to that head; every prompt's state
is saved in the cache once it is decoded. `stats` counts the prompt tokens
decoded and reused.

At temperature 0 a sequence's output can differ from the sequential decoder's:
the KV values of a prefix copied from another batch, and the order in which a
batch sums, change the floating-point results slightly; see docs/actors.md for
how often that was measured to change a greedy pick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import first_line
from .backend import EngineError
from .decode import FORCED_MAX, PROMPT_CHUNK_CPU, PROMPT_CHUNK_GPU, Decoded, ends_with_stop
from .prefix_cache import (
    MIN_GAIN,
    PrefixCache,
    common_prefix,
    restore_seq,
    save_seq,
    seq_intact,
)
from .token_sampling import SamplerBuffers, TokenSampler

# A shared head shorter than this is decoded with each prompt: copying it saves
# less than the extra bookkeeping costs.
MIN_SHARED_PREFIX = 8
# The most sequences one context may serve (llama.cpp's own limit is 256).
MAX_PARALLEL = 255


def kv_bytes_per_token(llama: Any) -> int:
    """KV-cache bytes per token of context: K and V, f16, every layer's KV heads."""
    import llama_cpp.llama_cpp as lc

    model = llama.model
    n_layer = int(lc.llama_model_n_layer(model))
    n_head = max(1, int(lc.llama_model_n_head(model)))
    n_head_kv = int(lc.llama_model_n_head_kv(model)) or n_head
    meta = dict(llama.metadata)
    arch = meta.get("general.architecture", "")
    head_dim = int(meta.get(f"{arch}.attention.key_length")
                   or int(lc.llama_model_n_embd(model)) // n_head)
    return 2 * n_layer * n_head_kv * head_dim * 2


@dataclass
class SeqRequest:
    """One generate() call: its inputs, and its state while it runs in the engine."""

    prompt: list[int]
    sampler: TokenSampler | None     # None: the shared-prefix job (decodes, samples nothing)
    max_tokens: int
    stop: Sequence[str] = ()
    deadline: float | None = None
    should_stop: Callable[[], bool] | None = None
    seq_id: int = -1
    fed: int = 0                     # prompt tokens already in this sequence's KV cells
    reused: int = 0                  # of those, copied from the shared prefix or the cache
    restored: Any = None             # (prefix-cache entry, head) it started from, if any
    waits_for_prefix: bool = False
    tokens: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)   # taken, not yet decoded
    in_flight: int = 0               # of pending, those in the batch being decoded
    pending_forced: bool = False     # pending holds forced tokens (jump-forward)
    forced_tokens: int = 0
    forced_spans: int = 0
    admitted: float = 0.0
    prompt_ms: float = 0.0
    result: Decoded | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def position(self) -> int:
        return self.fed + len(self.tokens) - len(self.pending)

    def interrupted(self) -> str | None:
        if self.should_stop is not None and self.should_stop():
            return "aborted"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "timeout"
        return None


@dataclass
class EngineStats:
    steps: int = 0                   # llama_decode calls
    prompt_tokens: int = 0           # prompt tokens of the sequences served
    prompt_decoded: int = 0          # prompt tokens decoded (the shared heads once each)
    prompt_reused: int = 0           # prompt tokens copied from the shared prefix
    prompt_restored: int = 0         # prompt tokens restored from the prefix cache
    generated: int = 0
    max_running: int = 0             # the most sequences in one step


class BatchEngine:
    """One llama.cpp context with up to `slots` sequences, driven by one thread."""

    def __init__(self, llama: Any, *, slots: int, n_ctx_seq: int, gpu: bool,
                 cache: PrefixCache | None = None):
        import llama_cpp.llama_cpp as lc

        self.lc = lc
        self.llama = llama
        self.cache = cache if cache is not None and cache.enabled else None
        self.slots = slots
        self.n_ctx_seq = n_ctx_seq
        self.chunk = PROMPT_CHUNK_GPU if gpu else PROMPT_CHUNK_CPU
        self.prefix_seq = slots                  # the sequence that holds a shared head
        self.n_batch = max(512, self.chunk + slots)
        self.vocab = lc.llama_model_get_vocab(llama.model)
        self.buffers = SamplerBuffers(int(llama.n_vocab()))
        self.ctx = self._new_context((slots + 1) * n_ctx_seq)
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self.stats = EngineStats()
        self._lock = threading.Condition()
        self._queue: deque[SeqRequest] = deque()
        self._running: list[SeqRequest] = []
        self._free = list(range(slots))
        self._prefix: list[int] = []             # tokens held by the prefix sequence
        self._prefix_job: SeqRequest | None = None
        self._recent: list[int] = []             # the last prompt admitted
        self._closing = False
        self._dead: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="llama-batch", daemon=True)
        self._thread.start()

    def _new_context(self, n_ctx: int) -> Any:
        lc = self.lc
        params = lc.llama_context_params.from_buffer_copy(self.llama.context_params)
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = self.slots + 1
        params.kv_unified = True     # copied prefix cells are shared, not duplicated
        params.swa_full = True       # sliding-window layers keep every cell a copy needs
        ctx = lc.llama_init_from_model(self.llama.model, params)
        if not ctx:
            raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens "
                              f"for {self.slots} sequences")
        return ctx

    # ------------------------------------------------------------ callers' side

    def run(self, request: SeqRequest) -> Decoded:
        """Queues a sequence and waits until it ends; raises EngineError. The
        result's wait_ms is the time the sequence queued for a slot."""
        queued = time.perf_counter()
        with self._lock:
            if self._dead is not None or self._closing:
                raise EngineError(f"the batch engine is not running: "
                                  f"{first_line(self._dead) if self._dead else 'closed'}")
            self._queue.append(request)
            self._lock.notify_all()
        request.done.wait()
        if request.error is not None:
            raise EngineError(first_line(request.error)) from request.error
        assert request.result is not None
        entered = request.admitted or time.perf_counter()   # 0: it ended in the queue
        request.result.wait_ms = max(0.0, (entered - queued) * 1000)
        return request.result

    def active(self) -> int:
        """Calls queued or holding a sequence slot (the shared-prefix job not counted)."""
        with self._lock:
            return len(self._queue) + self.slots - len(self._free)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join()
        if self.ctx:
            self.lc.llama_batch_free(self.batch)
            self.lc.llama_free(self.ctx)
            self.ctx = None

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        try:
            while self._wait_for_work():
                self._step()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            self._dead = exc
        finally:
            with self._lock:
                reason = self._dead or EngineError("the batch engine was closed")
                for request in [*self._running, *self._queue]:
                    if not request.done.is_set():
                        request.error = reason
                        request.done.set()
                self._running.clear()
                self._queue.clear()

    def _wait_for_work(self) -> bool:
        with self._lock:
            while not self._closing and not self._queue and not self._running:
                self._lock.wait()
            return not self._closing

    def _step(self) -> None:
        self._end_interrupted()
        self._admit()
        entries = self._fill_batch()
        if not entries:
            return
        rc = self.lc.llama_decode(self.ctx, self.batch)
        self.stats.steps += 1
        self.stats.max_running = max(self.stats.max_running, len(self._running))
        if rc != 0:
            failed = {id(r): r for r, _, _ in entries}
            for request in failed.values():
                self._fail(request, EngineError(f"llama_decode returned {rc} for a batch "
                                                f"of {self.batch.n_tokens} tokens"))
            return
        for request, took, row in entries:
            self._after_decode(request, took, row)

    def _end_interrupted(self) -> None:
        with self._lock:
            queued = list(self._queue)
        for request in queued + [r for r in self._running if r.sampler is not None]:
            reason = request.interrupted()
            if reason is not None:
                request.pending = []   # taken but never decoded: kept in the answer
                self._finish(request, reason)

    def _admit(self) -> None:
        """Gives free sequence slots to waiting calls, in the order they came."""
        while self._free:
            with self._lock:
                if not self._queue:
                    return
                request = self._queue.popleft()
            request.seq_id = self._free.pop(0)
            request.admitted = time.perf_counter()
            self.stats.prompt_tokens += len(request.prompt)
            self._running.append(request)
            self._share_prefix(request)
            self._recent = request.prompt

    def _share_prefix(self, request: SeqRequest) -> None:
        """Starts the request after the shared prefix when it has enough of it in common,
        decoding a new shared head first when this prompt and another one share one;
        or after a prefix-cache entry's head, restored, when that is longer by
        MIN_GAIN tokens (copying the shared prefix's cells costs nothing; a restore
        copies the entry)."""
        limit = len(request.prompt) - 1      # the last prompt token is decoded for logits
        shared = common_prefix(request.prompt, self._prefix, limit)
        head = 0
        if shared < MIN_SHARED_PREFIX and self._prefix_job is None:
            with self._lock:
                others = [r.prompt for r in self._queue]
            head = max((common_prefix(request.prompt, p, limit) for p in [self._recent, *others]),
                       default=0)
        if self._restore_cached(request, max(shared, head, MIN_SHARED_PREFIX) + MIN_GAIN):
            return
        if head >= MIN_SHARED_PREFIX:
            self._start_prefix(request.prompt[:head])
            shared = head
        if shared < MIN_SHARED_PREFIX:
            return
        request.reused = shared
        if self._prefix_job is not None:
            request.waits_for_prefix = True
        else:
            self._copy_prefix(request)

    def _restore_cached(self, request: SeqRequest, at_least: int) -> bool:
        """Restores the cache entry sharing the longest head with the request's prompt
        into its sequence, cut back to that head, when the head has at_least tokens;
        whether it did. (A stop meanwhile ends the request at the next step, as one
        during a decode does.)"""
        cache = self.cache
        if cache is None:
            return False
        entry, head = cache.best(request.prompt, len(request.prompt) - 1)
        if entry is None or head < at_least:
            return False
        if not (restore_seq(self.ctx, entry, request.seq_id, head)
                and seq_intact(self.ctx, self.llama.model, request.seq_id, head)):
            self.lc.llama_memory_seq_rm(self.memory, request.seq_id, -1, -1)
            cache.refuse(entry)
            return False
        cache.hit(entry, head)
        request.fed = request.reused = head
        request.restored = (entry, head)
        self.stats.prompt_restored += head
        return True

    def _save_prompt(self, request: SeqRequest) -> None:
        """Keeps a just-decoded prompt's state in the prefix cache (its sequence holds
        exactly the prompt's cells now)."""
        if self.cache is not None:
            save_seq(self.cache, self.ctx, request.seq_id, request.prompt, request.restored)
            request.restored = None

    def _start_prefix(self, head: list[int]) -> None:
        self.lc.llama_memory_seq_rm(self.memory, self.prefix_seq, -1, -1)
        self._prefix = head
        job = SeqRequest(prompt=head, sampler=None, max_tokens=0, seq_id=self.prefix_seq)
        self._prefix_job = job
        self._running.insert(0, job)

    def _copy_prefix(self, request: SeqRequest) -> None:
        self.lc.llama_memory_seq_cp(self.memory, self.prefix_seq, request.seq_id, 0,
                                    request.reused)
        request.fed = request.reused
        request.waits_for_prefix = False
        self.stats.prompt_reused += request.reused

    def _fill_batch(self) -> list[tuple[SeqRequest, int, int]]:
        """The next batch: each generating sequence's token, then prompt chunks.
        Returns (request, prompt tokens taken, logits row or -1) per request in it."""
        batch = self.batch
        batch.n_tokens = 0
        entries: list[tuple[SeqRequest, int, int]] = []
        # A sequence's pending tokens (a sampled one and those the grammar forced
        # after it) go in together, logits for the last; the rows left beside the
        # prompt chunk are shared in order, and the pending tokens that do not fit
        # go in the next step (this step's part then needs no logits).
        rows = self.n_batch - self.chunk
        for request in self._running:
            if request.pending and rows > 0:
                n = min(len(request.pending), rows)
                rows -= n
                base = request.position
                row = -1
                for i, token in enumerate(request.pending[:n]):
                    wants = i == len(request.pending) - 1
                    r = self._add(token, base + i, request.seq_id, wants)
                    row = r if wants else row
                request.in_flight = n
                if request.pending_forced:
                    request.forced_spans += 1
                    request.pending_forced = n < len(request.pending)
                entries.append((request, 0, row))
        budget = self.chunk
        for request in self._running:
            if budget <= 0:
                break
            if request.pending or request.waits_for_prefix \
                    or request.fed >= len(request.prompt):
                continue
            take = min(budget, len(request.prompt) - request.fed)
            last = request.fed + take == len(request.prompt)
            row = -1
            for i in range(request.fed, request.fed + take):
                wants = last and i == len(request.prompt) - 1 and request.sampler is not None
                r = self._add(request.prompt[i], i, request.seq_id, wants)
                row = r if wants else row
            entries.append((request, take, row))
            budget -= take
        return entries

    def _add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        batch = self.batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = 1 if logits else 0
        batch.n_tokens = i + 1
        return i

    def _after_decode(self, request: SeqRequest, took: int, row: int) -> None:
        if took:
            request.fed += took
            self.stats.prompt_decoded += took
            if request.fed < len(request.prompt):
                return
            if request.sampler is None:      # the shared head is ready
                self._prefix_ready(request)
                return
            request.prompt_ms = (time.perf_counter() - request.admitted) * 1000
            self._save_prompt(request)
        else:
            del request.pending[:request.in_flight]
            request.in_flight = 0
            if request.pending:              # forced tokens that did not fit this step
                return
        self._sample(request, row)

    def _prefix_ready(self, job: SeqRequest) -> None:
        self._running.remove(job)
        self._prefix_job = None
        for request in self._running:
            if request.waits_for_prefix:
                self._copy_prefix(request)

    def _sample(self, request: SeqRequest, row: int) -> None:
        """Samples the sequence's next token, then takes the tokens the grammar
        forces after it (jump-forward); they are decoded together next step."""
        sampler = request.sampler
        assert sampler is not None
        # The first token too is the model's own pick (how it opens the answer, `{` or
        # `{"`, is its choice): forced tokens only ever follow a sampled one.
        token = sampler.sample(self.ctx, row)
        if self.lc.llama_vocab_is_eog(self.vocab, token):
            self._finish(request, "stop")
            return
        reason = self._take(request, token)
        if reason is None:
            request.pending = [token]
            reason = self._force(request)
        if reason is not None:
            self._finish(request, reason)

    def _take(self, request: SeqRequest, token: int) -> str | None:
        """Accepts a token into the answer; why the answer ends with it, if it does."""
        assert request.sampler is not None
        request.sampler.accept(token)
        request.tokens.append(token)
        self.stats.generated += 1
        tail = max((len(s) for s in request.stop), default=0) + 2
        if request.stop and ends_with_stop(self.llama, request.tokens[-tail:], request.stop):
            return "stop"
        if len(request.tokens) >= request.max_tokens \
                or request.fed + len(request.tokens) + 1 >= self.n_ctx_seq:
            return "length"
        return None

    def _force(self, request: SeqRequest) -> str | None:
        """Takes the tokens the grammar forces now into the answer and pending; why
        the answer ends, if it does (the grammar admits nothing more: "stop")."""
        sampler = request.sampler
        assert sampler is not None
        room = min(request.max_tokens - len(request.tokens), FORCED_MAX)
        for token in sampler.forced(room):
            if not sampler.allows(token):
                break
            request.forced_tokens += 1
            request.pending.append(token)
            request.pending_forced = True
            reason = self._take(request, token)
            if reason is not None:
                return reason
        return "stop" if sampler.must_end() else None

    def _finish(self, request: SeqRequest, reason: str) -> None:
        self._release(request)
        if request.admitted and request.fed < len(request.prompt):
            request.prompt_ms = (time.perf_counter() - request.admitted) * 1000
        sampler = request.sampler
        request.result = Decoded(
            list(request.tokens), "", reason, len(request.prompt), request.prompt_ms,
            request.reused, sampler.rejections if sampler else 0,
            sampler.full_masks if sampler else 0,
            forced_tokens=request.forced_tokens, forced_spans=request.forced_spans)
        request.done.set()

    def _fail(self, request: SeqRequest, error: BaseException) -> None:
        self._release(request)
        if request is self._prefix_job:
            self._prefix_job, self._prefix = None, []
            for waiting in self._running:
                if waiting.waits_for_prefix:
                    self._fail(waiting, error)
            return
        request.error = error
        request.done.set()

    def _release(self, request: SeqRequest) -> None:
        """Frees the request's sequence slot and KV cells (a queued request has none)."""
        with self._lock:
            if request in self._queue:
                self._queue.remove(request)
                return
        if request in self._running:
            self._running.remove(request)
            self.lc.llama_memory_seq_rm(self.memory, request.seq_id, -1, -1)
            if request.seq_id != self.prefix_seq:
                self._free.append(request.seq_id)

