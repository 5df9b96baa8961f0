"""Where the samplers' time goes, for benchmarks (`bench_time_split.py`).

`timed_sampling` swaps timed versions of `TokenSampler`'s methods in for the
length of a block, and the plain ones back after it: the product's sampler
carries no timing code and costs nothing extra outside a benchmark.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from interpreter.llm.token_sampling import TokenSampler


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

