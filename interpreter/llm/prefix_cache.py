"""The prefix cache: the KV state of recent prompts of one loaded model, kept across
calls (waves, steps, subjects) so that a prompt that starts like an earlier one
decodes only what differs.

An entry is one sequence's KV cells as llama.cpp saves them
(``llama_state_seq_get_data``), keyed by the prompt's tokens. Before a prompt is
decoded, the decoder looks for the entry that shares the longest head with it
(`PrefixCache.best`), restores it into its sequence
(``llama_state_seq_set_data``), drops the cells after the shared head
(``llama_memory_seq_rm``) and decodes only the rest; after the prompt is
decoded it saves the prompt's state (`PrefixCache.store`).

The entries stay within a budget in bytes, least recently used evicted first; an
entry bigger than the whole budget is not stored, and a prompt that extends an
entry's tokens replaces it (the longer one serves every prompt the shorter did).
A prompt restored from an entry that it shares at least half of replaces that
entry too: a subject's steps share its text and differ in their instructions,
so the newer prompt serves the subject's next step as well, and one entry per
subject fits twice as many subjects in the budget. (An entry sharing less, such
as another subject's, whose head is only the template's first lines, stays.)
A scan for the longest common prefix over the entries is enough: there are tens
of entries, and two token lists are compared by slices in C (`common_prefix`).

Sliding-window layers (Gemma 3): llama.cpp saves only the cells that the window
still sees from the end of the sequence, so an entry longer than the window,
cut back to a shorter head, lacks the cells that head needs. Such prompts are
not stored whole (the sequential decoder stores their first window's length of
tokens instead, saved on the way), and `seq_intact` says whether the cells in
the context cover what the next token sees; the decoder decodes from scratch
when they do not.

Thread-safety: one cache per loaded model, used by that model's one decoding
thread (the sequential decoder's caller, or the batching engine's loop); the
lock only guards the counters that `stats` reads from another thread.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The default budget per loaded model, for a row whose prefix_cache_mb is NULL.
# A prompt's saved state costs 22.5 KiB a token with SmolLM2-135M and 18.0 KiB
# with Gemma-3-270M (f16 K and V of every layer; measured, 23,057 and 18,460
# bytes, and asserted by tests/integration/test_prefix_cache.py), so 256 MiB
# holds about 11,600 prompt tokens of SmolLM2 and 14,500 of Gemma: a prompt of
# 450 tokens for each of 25 (SmolLM2) or 32 (Gemma) subjects, three waves of 8
# (the default model_batch_size), so a subject's next step on the same model
# finds its head. It is allocated as entries come, and freed with the model.
DEFAULT_BUDGET_MB = 256
MIB = 1 << 20
# A cached head must beat what the context already holds by this many tokens to be
# restored: restoring copies the whole entry, which costs more than decoding a few tokens.
MIN_GAIN = 8


def budget_bytes_of(prefix_cache_mb: int | None) -> int:
    """The budget in bytes for a model row's prefix_cache_mb (NULL: the default; 0: off)."""
    mb = DEFAULT_BUDGET_MB if prefix_cache_mb is None else max(0, prefix_cache_mb)
    return mb * MIB


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int | None = None) -> int:
    """How many leading tokens a and b share (at most limit): a binary search over
    slice comparisons, which run in C."""
    top = min(len(a), len(b))
    if limit is not None:
        top = min(top, max(0, limit))
    a, b = list(a[:top]), list(b[:top])
    if a == b:
        return top
    low, high = 0, top          # a[:low] == b[:low]; a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    return low


@dataclass
class Entry:
    tokens: list[int]
    state: Any                 # a ctypes uint8 array: llama.cpp's saved sequence state
    nbytes: int


class PrefixCache:
    """One loaded model's saved prompt states, within `budget` bytes (LRU)."""

    def __init__(self, budget: int):
        self.budget = max(0, budget)
        self._entries: OrderedDict[int, Entry] = OrderedDict()   # oldest first
        self._next_key = 0
        self._lock = threading.Lock()
        self.used = 0
        self.hits = 0              # prompts started from a restored entry
        self.tokens_reused = 0     # prompt tokens those restores saved decoding
        self.stores = 0
        self.evictions = 0
        self.too_big = 0           # states larger than the whole budget, not stored
        self.too_long = 0          # prompts longer than a sliding window, not stored
        self.refused = 0           # restores llama.cpp refused, or cut sliding windows

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        """The entries, least recently used first."""
        return list(self._entries.values())

    def best(self, prompt: Sequence[int], limit: int) -> tuple[Entry | None, int]:
        """The entry sharing the longest head with prompt (at most limit tokens), and
        that length; (None, 0) when none shares a token."""
        found: Entry | None = None
        length = 0
        for entry in self._entries.values():
            n = common_prefix(entry.tokens, prompt, limit)
            if n > length:
                found, length = entry, n
        return found, length

    def hit(self, entry: Entry, reused: int) -> None:
        """Records a restore of entry for `reused` tokens; it becomes the most recent."""
        with self._lock:
            self.hits += 1
            self.tokens_reused += reused
            for key, e in self._entries.items():
                if e is entry:
                    self._entries.move_to_end(key)
                    break

    def skip_long(self) -> None:
        """Counts a prompt not stored because it outgrew a sliding window."""
        with self._lock:
            self.too_long += 1

    def refuse(self, entry: Entry) -> None:
        """An entry whose restore failed: dropped, so it is not tried again."""
        with self._lock:
            self.refused += 1
            self._drop(lambda e: e is entry)

    def store(self, tokens: Sequence[int], size: int, fill: Any,
              restored: tuple[Entry, int] | None = None) -> bool:
        """Keeps the state of a sequence holding exactly `tokens` (size bytes, written
        into a buffer by fill(buffer, size) -> bytes written). Returns whether it was
        stored. An entry whose tokens extend tokens (or equal them) is kept instead,
        made the most recent; entries that tokens extends are replaced, and so is
        the entry the prompt was restored from (restored: it and the head used)
        when that head is at least half of it."""
        if not self.enabled or not tokens:
            return False
        tokens = list(tokens)
        with self._lock:
            for key, e in self._entries.items():
                if len(e.tokens) >= len(tokens) and e.tokens[:len(tokens)] == tokens:
                    self._entries.move_to_end(key)
                    return False
            if size <= 0 or size > self.budget:
                self.too_big += size > self.budget
                return False
            self._drop(lambda e: tokens[:len(e.tokens)] == e.tokens)
            if restored is not None and 2 * restored[1] >= len(restored[0].tokens):
                self._drop(lambda e: e is restored[0])
            while self._entries and self.used + size > self.budget:
                self._evict_oldest()
        buffer = (ctypes.c_uint8 * size)()
        written = int(fill(buffer, size))
        if written <= 0 or written > size:
            return False
        with self._lock:
            # Another store cannot run in between (one thread per cache), but the
            # budget is checked again so that it holds whatever happens.
            while self._entries and self.used + written > self.budget:
                self._evict_oldest()
            self._entries[self._next_key] = Entry(tokens, buffer, written)
            self._next_key += 1
            self.used += written
            self.stores += 1
        return True

    def _evict_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.used -= entry.nbytes
        self.evictions += 1

    def _drop(self, which: Any) -> None:
        for key in [k for k, e in self._entries.items() if which(e)]:
            self.used -= self._entries.pop(key).nbytes

    def clear(self) -> None:
        """Frees every entry (the model is closing)."""
        with self._lock:
            self._entries.clear()
            self.used = 0

    def stats(self) -> dict[str, Any]:
        """For `interp models check`: entries, bytes used, budget, hits, tokens reused."""
        with self._lock:
            return {"entries": len(self._entries), "used_bytes": self.used,
                    "budget_bytes": self.budget, "hits": self.hits,
                    "tokens_reused": self.tokens_reused, "stores": self.stores,
                    "evictions": self.evictions, "too_big": self.too_big,
                    "too_long": self.too_long, "refused": self.refused}


# ---------------------------------------------------------------- llama.cpp's side

def save_seq(cache: PrefixCache, ctx: Any, seq_id: int, tokens: Sequence[int],
             restored: tuple[Entry, int] | None = None) -> bool:
    """Saves sequence seq_id of ctx, which holds exactly tokens, into the cache
    (restored: the entry it started from and the head used, see `PrefixCache.store`)."""
    import llama_cpp.llama_cpp as lc

    if not cache.enabled:
        return False
    n_swa = int(lc.llama_model_n_swa(lc.llama_get_model(ctx)))
    if 0 < n_swa < len(tokens):
        # Its saved sliding-window cells would start after position 0: no shorter
        # head could be restored from it (`seq_intact`), so it would only take room.
        cache.skip_long()
        return False
    size = int(lc.llama_state_seq_get_size(ctx, seq_id))

    def fill(buffer: Any, n: int) -> int:
        return int(lc.llama_state_seq_get_data(ctx, buffer, n, seq_id))

    return cache.store(tokens, size, fill, restored)


def restore_seq(ctx: Any, entry: Entry, seq_id: int, keep: int) -> bool:
    """Loads entry into sequence seq_id of ctx (replacing its cells) and drops the
    cells from position keep on; False when llama.cpp refuses (the sequence is
    then left empty)."""
    import llama_cpp.llama_cpp as lc

    memory = lc.llama_get_memory(ctx)
    if not lc.llama_state_seq_set_data(ctx, entry.state, entry.nbytes, seq_id):
        lc.llama_memory_seq_rm(memory, seq_id, -1, -1)
        return False
    if not lc.llama_memory_seq_rm(memory, seq_id, keep, -1):
        lc.llama_memory_seq_rm(memory, seq_id, -1, -1)
        return False
    return True


def seq_intact(ctx: Any, model: Any, seq_id: int, keep: int) -> bool:
    """Whether sequence seq_id's cells cover positions 0..keep-1 as the next token
    at position keep sees them: all of them, or for a model with sliding-window
    layers at least the window before keep (llama.cpp's own rule in its server)."""
    import llama_cpp.llama_cpp as lc

    if keep <= 0:
        return True
    memory = lc.llama_get_memory(ctx)
    pos_min = int(lc.llama_memory_seq_pos_min(memory, seq_id))
    pos_max = int(lc.llama_memory_seq_pos_max(memory, seq_id))
    if pos_max != keep - 1 or pos_min < 0:
        return False
    n_swa = int(lc.llama_model_n_swa(model))
    return pos_min <= (max(0, keep - n_swa) if n_swa > 0 else 0)
