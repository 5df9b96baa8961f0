"""The prefix cache's own rules, without a model: the longest shared head, the
budget, LRU eviction, and entries that extend one another. (The real states of
SmolLM2 and Gemma: tests/integration/test_prefix_cache.py.) And the audit of
what was reused and forced, summed over a subject's tries."""

from __future__ import annotations

import random

from interpreter.llm.decode import chunk_bounds
from interpreter.llm.prefix_cache import MIB, PrefixCache, budget_bytes_of, common_prefix


def fill_with(byte: int):
    def fill(buffer, size: int) -> int:
        for i in range(size):
            buffer[i] = byte
        return size
    return fill


def store(cache: PrefixCache, tokens: list[int], size: int) -> bool:
    return cache.store(tokens, size, fill_with(len(tokens) % 256))


def test_common_prefix_agrees_with_a_plain_scan():
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randrange(0, 70)
        a = [rng.randrange(3) for _ in range(n)]
        b = a[:rng.randrange(0, n + 1)] + [rng.randrange(3) for _ in range(rng.randrange(5))]
        limit = rng.choice([None, rng.randrange(0, 80)])
        plain = 0
        for x, y in zip(a, b, strict=False):
            if x != y or (limit is not None and plain >= limit):
                break
            plain += 1
        assert common_prefix(a, b, limit) == plain


def test_prompt_chunks_end_at_a_sliding_window_when_asked():
    assert chunk_bounds(0, 150, 64) == [(0, 64), (64, 128), (128, 150)]
    assert chunk_bounds(10, 150, 64, cut=100) == [(10, 74), (74, 100), (100, 150)]
    assert chunk_bounds(0, 128, 64, cut=64) == [(0, 64), (64, 128)]
    assert chunk_bounds(5, 5, 64, cut=3) == []


def test_the_best_entry_shares_the_longest_head_within_the_limit():
    cache = PrefixCache(1000)
    store(cache, [1, 2, 3, 4, 5], 10)
    store(cache, [1, 2, 9], 10)
    entry, n = cache.best([1, 2, 3, 4, 7], limit=4)
    assert entry is not None and entry.tokens == [1, 2, 3, 4, 5] and n == 4
    entry, n = cache.best([1, 2, 3, 4, 5, 6], limit=3)
    assert n == 3
    assert cache.best([8, 1, 2], limit=2) == (None, 0)


def test_the_cache_never_exceeds_its_budget_and_evicts_the_least_recently_used():
    cache = PrefixCache(100)
    rng = random.Random(3)
    order: list[list[int]] = []
    for i in range(200):
        tokens = [i, *(rng.randrange(50) for _ in range(rng.randrange(1, 6)))]
        size = rng.randrange(1, 60)
        assert store(cache, tokens, size)
        order.append(tokens)
        assert cache.used <= cache.budget
        assert cache.used == sum(e.nbytes for e in cache.entries())
        kept = [e.tokens for e in cache.entries()]
        # What is kept is the newest stores, in order: the oldest went first.
        assert kept == order[len(order) - len(kept):]
    assert cache.evictions == 200 - len(cache)


def test_a_hit_makes_an_entry_the_most_recent():
    cache = PrefixCache(30)
    store(cache, [1, 1], 10)
    store(cache, [2, 2], 10)
    store(cache, [3, 3], 10)
    entry, n = cache.best([1, 1, 5], limit=2)
    assert entry is not None
    cache.hit(entry, n)
    store(cache, [4, 4], 10)         # evicts [2, 2], not the entry just used
    assert [e.tokens for e in cache.entries()] == [[3, 3], [1, 1], [4, 4]]
    assert cache.stats()["hits"] == 1 and cache.stats()["tokens_reused"] == 2


def test_an_entry_bigger_than_the_budget_is_not_stored_and_evicts_nothing():
    cache = PrefixCache(50)
    store(cache, [1], 40)
    assert not store(cache, [2], 51)
    assert [e.tokens for e in cache.entries()] == [[1]] and cache.stats()["too_big"] == 1


def test_a_prompt_that_extends_an_entry_replaces_it_and_one_it_extends_is_not_stored():
    cache = PrefixCache(100)
    store(cache, [1, 2, 3], 10)
    assert store(cache, [1, 2, 3, 4, 5], 20)
    assert [e.tokens for e in cache.entries()] == [[1, 2, 3, 4, 5]] and cache.used == 20
    assert not store(cache, [1, 2, 3], 10)        # the longer entry serves it
    assert not store(cache, [1, 2, 3, 4, 5], 20)  # the same prompt again
    assert len(cache) == 1 and cache.used == 20


def test_a_budget_of_zero_turns_the_cache_off_and_null_is_the_default():
    assert not PrefixCache(budget_bytes_of(0)).enabled
    assert not store(PrefixCache(0), [1, 2], 1)
    assert budget_bytes_of(None) == 256 * MIB and budget_bytes_of(64) == 64 * MIB


def test_a_refused_entry_is_dropped_and_clear_frees_everything():
    cache = PrefixCache(100)
    store(cache, [1, 2], 10)
    store(cache, [3, 4], 10)
    entry, _ = cache.best([1, 2, 0], limit=2)
    assert entry is not None
    cache.refuse(entry)
    assert [e.tokens for e in cache.entries()] == [[3, 4]] and cache.used == 10
    cache.clear()
    assert len(cache) == 0 and cache.used == 0


# ---------------------------------------------------------------- the audit

class ReaskingBackend:
    """Answers every subject's first try with text that is not JSON (re-asked), then
    with JSON: each try reports `reused` prompt tokens and `forced` answer tokens."""

    slots, sha256, size_bytes, n_ctx, load_ms = 1, None, 0, 512, 0.0

    def __init__(self, model, settings):
        self.name = model.name
        self.tries: dict[str, int] = {}
        scheme_args = dict(p.split("=") for p in model.source.split("#")[1].split(","))
        self.reused = [None if v == "none" else int(v) for v in scheme_args["reused"].split("/")]
        self.forced = [None if v == "none" else int(v) for v in scheme_args["forced"].split("/")]

    def generate(self, request):
        from interpreter.llm.backend import Generation

        subject = request.chat()[0]["content"]
        n = self.tries.get(subject, 0)
        self.tries[subject] = n + 1
        text = "not json" if n == 0 else '{"id": "x"}'
        return Generation(text, "stop", 40, 5, 1.0, prompt_tokens_reused=self.reused[n],
                          forced_tokens=self.forced[n])

    def count_prompt(self, messages):
        return None

    def truncate_middle(self, text, max_tokens, marker="\n[...]\n"):
        return text

    def describe(self):
        return {}

    def close(self):
        pass


def audit_of(source: str) -> dict:
    from interpreter.actor_api import Subject
    from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow
    from interpreter.llm.pool import ModelPool, register_backend_kind, unregister_backend_kind
    from interpreter.model_actor import run_model_wave

    register_backend_kind("reask", ReaskingBackend, lambda m: 1)
    try:
        model = ModelDef("m", source)
        step = StepDef(workflow_id=1, number=1, name="s", kind="actor", actor="a", template="t",
                       output_schema={"type": "object"})
        wf = Workflow(id=1, name="w", description="", subject_table="items", subject_key="id",
                      paused=False, version=1, steps={1: step}, transitions={},
                      entry_points=[], actors={"a": ActorDef("a", "model", "m")},
                      models={"m": model}, templates={"t": "{{ id }}"})
        with ModelPool(1 << 30) as pool:
            (result,) = run_model_wave(pool, wf, step, [Subject("s1", {"id": "s1"}, {})])
    finally:
        unregister_backend_kind("reask")
    assert result.ok and result.audit["tries"] == 2
    return result.audit


def test_the_audit_sums_reused_and_forced_tokens_over_the_tries():
    audit = audit_of("reask://x#reused=30/45,forced=4/6")
    assert (audit["prompt_tokens_reused"], audit["forced_tokens"]) == (75, 10)
    assert audit["prompt_tokens"] == 80


def test_a_backend_that_cannot_tell_leaves_the_audit_null():
    audit = audit_of("reask://x#reused=none/none,forced=none/none")
    assert audit["prompt_tokens_reused"] is None and audit["forced_tokens"] is None
    audit = audit_of("reask://x#reused=none/12,forced=none/0")
    assert (audit["prompt_tokens_reused"], audit["forced_tokens"]) == (12, 0)


def test_a_servers_cached_tokens_are_its_reused_tokens():
    from interpreter.llm.backend import server_cached_tokens

    assert server_cached_tokens({"prompt_tokens": 90,
                                 "prompt_tokens_details": {"cached_tokens": 64}}) == 64
    assert server_cached_tokens({"prompt_tokens": 90}) is None
    assert server_cached_tokens({"prompt_tokens_details": None}) is None
    assert server_cached_tokens({"prompt_tokens_details": {"cached_tokens": True}}) is None
    assert server_cached_tokens({"prompt_tokens_details": {"cached_tokens": -1}}) is None


def test_a_servers_cached_tokens_beyond_its_prompt_are_not_recorded():
    # prompt_tokens - prompt_tokens_reused is what was decoded (docs/schema.md): a
    # server that says it cached more than the prompt (or sends no prompt_tokens,
    # recorded as 0) would make that negative.
    from interpreter.llm.backend import server_cached_tokens

    assert server_cached_tokens({"prompt_tokens": 90,
                                 "prompt_tokens_details": {"cached_tokens": 90}}) == 90
    assert server_cached_tokens({"prompt_tokens": 90,
                                 "prompt_tokens_details": {"cached_tokens": 91}}) is None
    assert server_cached_tokens({"prompt_tokens_details": {"cached_tokens": 64}}) is None
