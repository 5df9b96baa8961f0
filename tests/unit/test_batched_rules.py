"""The pure rules of continuous batching: shared prefixes, the memory check, the
default width, and when the sampler may read the arg-max."""

from __future__ import annotations

import pytest

from interpreter.definitions import ModelDef
from interpreter.llm.backend import ModelLoadError
from interpreter.llm.batched import common_prefix
from interpreter.llm.llama_backend import DEFAULT_GPU_PARALLEL, check_fits, parallel_of
from interpreter.llm.token_sampling import is_plain_greedy

MIB = 1 << 20


def test_common_prefix_stops_at_the_first_difference_and_at_the_limit():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4], limit=10) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4], limit=10) == 3
    assert common_prefix([1, 2, 3], [1, 2, 3], limit=2) == 2
    assert common_prefix([], [1], limit=5) == 0


def test_parallel_defaults_to_one_on_the_cpu_and_the_row_overrides():
    assert parallel_of(ModelDef("m", "x.gguf")) == 1
    assert parallel_of(ModelDef("m", "x.gguf", n_gpu_layers=-1)) == DEFAULT_GPU_PARALLEL
    assert parallel_of(ModelDef("m", "x.gguf", parallel=4)) == 4
    assert parallel_of(ModelDef("m", "x.gguf", n_gpu_layers=-1, parallel=1)) == 1


def test_kv_cache_that_does_not_fit_names_the_parallel_that_does():
    model = ModelDef("m", "x.gguf", n_ctx=1024)
    per_token = 20_000                        # bytes: 19.5 MiB per sequence of 1,024 tokens
    check_fits(model, 4, 100 * MIB, per_token, budget_bytes=None)       # no budget: no check
    check_fits(model, 4, 100 * MIB, per_token, budget_bytes=300 * MIB)  # 5 x 19.5 MiB fits
    # 200 MiB left hold 10 sequences: 9 and the shared-prefix one.
    with pytest.raises(ModelLoadError, match=r"parallel 16 needs .* set "
                                             r"interp.models.parallel to 9 or less"):
        check_fits(model, 16, 100 * MIB, per_token, budget_bytes=300 * MIB)
    with pytest.raises(ModelLoadError) as info:
        check_fits(model, 2, 100 * MIB, per_token, budget_bytes=110 * MIB)
    assert "set interp.models.parallel" not in str(info.value)   # not even one fits
    assert "raise the budget" in str(info.value)


def test_only_a_plain_greedy_chain_reads_the_argmax():
    assert is_plain_greedy({"temperature": 0.0})
    assert is_plain_greedy({})
    assert not is_plain_greedy({"temperature": 0.0, "repeat_penalty": 1.15})
    assert not is_plain_greedy({"temperature": 0.7})
    assert not is_plain_greedy({"presence_penalty": 0.5})
