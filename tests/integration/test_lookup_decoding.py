"""Prompt-lookup drafting in the sequential decoder, with the real SmolLM2: drafted
tokens are kept only where the model picks them itself."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest

from interpreter.definitions import ModelDef
from interpreter.llm.backend import GenerationRequest
from interpreter.llm.llama_backend import LlamaBackend

NAMES = ["Amsterdam Central Library", "Rotterdam Harbour Office", "Utrecht Science Park",
         "Groningen Medical Centre", "Eindhoven Design Academy"]
PROMPT = ("Copy these five places exactly, one per line, in the same order:\n"
          + "\n".join(NAMES) + "\n")
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["places"],
          "properties": {"places": {"type": "array", "maxItems": 5,
                                    "items": {"type": "string", "maxLength": 40}}}}
# Two picks whose logits differ by less than this are a tie that the floating-point
# order of a batched decode may break either way.
TIE = 0.5


@pytest.fixture
def backend(smollm2: Path):
    b = LlamaBackend(ModelDef("smol", str(smollm2), n_ctx=1024, n_threads=1))
    yield b
    b.close()


def generate(backend: LlamaBackend, lookup: int, schema=None, max_tokens: int = 64):
    return backend.generate(GenerationRequest(PROMPT, schema=schema, max_tokens=max_tokens, seed=1,
                            sampling={"temperature": 0.0, "lookup_tokens": lookup},
                            deadline=None))


def greedy_gaps(backend: LlamaBackend, answer: list[int]) -> list[float]:
    """For each answer token: how far its logit is below the best one, in a fresh
    token-by-token decode of the prompt and the answer before it."""
    import llama_cpp.llama_cpp as lc

    llama = backend.llama
    prompt, _ = backend.prompt_tokens(PROMPT)
    llama.reset()
    llama.eval(prompt)
    gaps = []
    for token in answer:
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llama.ctx, -1),
                                       shape=(llama.n_vocab(),))
        gaps.append(float(logits.max() - logits[token]))
        llama.eval([token])
    return gaps


def test_drafted_tokens_are_the_models_own_greedy_picks(backend):
    plain = generate(backend, 0)
    assert backend.decoder.drafted == 0
    drafted = generate(backend, 4)
    # The answer copies the prompt: some drafts are right, and some are not.
    assert 0 < backend.decoder.accepted < backend.decoder.drafted
    answer = backend.llama.tokenize(drafted.text.encode(), add_bos=False, special=False)
    assert max(greedy_gaps(backend, answer)) < TIE
    # The same answer as without drafting, unless a near-tie broke the other way.
    if drafted.text != plain.text:
        other = backend.llama.tokenize(plain.text.encode(), add_bos=False, special=False)
        assert max(greedy_gaps(backend, other)) < TIE


def test_drafting_keeps_schema_answers_valid_and_the_cache_consistent(backend):
    first = generate(backend, 3, schema=SCHEMA, max_tokens=96)
    jsonschema.validate(__import__("json").loads(first.text), SCHEMA)
    # The next call reuses the cached prompt prefix: the Llama's record of its KV
    # cells must match what drafting left in them, or this answer would drift.
    again = generate(backend, 3, schema=SCHEMA, max_tokens=96)
    assert again.text == first.text
    assert again.finish_reason == first.finish_reason == "stop"


def test_lookup_tokens_zero_turns_drafting_off(backend):
    generate(backend, 0, schema=SCHEMA, max_tokens=48)
    assert backend.decoder.drafted == 0
