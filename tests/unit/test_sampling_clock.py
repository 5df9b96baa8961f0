"""bench/sampling_clock.timed_sampling: the sampler's time is measured inside the block
only, and outside it the sampler runs its plain methods (nothing added)."""

from __future__ import annotations

import ctypes

from bench.sampling_clock import timed_sampling
from interpreter.llm.token_sampling import TokenSampler


class FakeLlamaCpp:
    """llama.cpp's logits for one batch row: token 2 is the most likely of four."""

    def __init__(self) -> None:
        self.logits = (ctypes.c_float * 4)(0.1, 0.2, 0.9, 0.3)

    def llama_get_logits_ith(self, ctx: object, index: int) -> object:
        return ctypes.cast(self.logits, ctypes.POINTER(ctypes.c_float))


def greedy_sampler() -> TokenSampler:
    """A TokenSampler with no grammar whose chain is the plain arg-max (no llama.cpp)."""
    sampler = TokenSampler.__new__(TokenSampler)
    sampler.lc = FakeLlamaCpp()
    sampler.n_vocab = 4
    sampler.argmax_only = True
    sampler.grammar = None
    return sampler


def test_timed_sampling_counts_each_token_and_its_time():
    sampler = greedy_sampler()
    with timed_sampling() as clock:
        assert [sampler.sample(None) for _ in range(3)] == [2, 2, 2]
    assert clock.tokens == 3 and clock.sample_s > 0
    assert clock.grammar_s == 0 and clock.setup_s == 0     # no grammar, no sampler built
    sampler.sample(None)
    assert clock.tokens == 3                               # off again after the block


def test_outside_the_block_the_sampler_runs_its_plain_methods():
    plain = {name: TokenSampler.__dict__[name] for name in ("__init__", "sample")}
    with timed_sampling():
        assert all(TokenSampler.__dict__[name] is not method for name, method in plain.items())
    assert all(TokenSampler.__dict__[name] is method for name, method in plain.items())
