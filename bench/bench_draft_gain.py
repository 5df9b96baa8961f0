"""Whether prompt-lookup drafting pays on this machine: bench_throughput's prompts
through the sequential lane alone (``run_model_wave``), with drafting off or on,
and what the decoder measured per kind of answer (``drafting.DraftGain``:
time per token of a draft check and of a plain step, checks made and skipped).

Usage: OMP_WAIT_POLICY=passive .venv/bin/python bench/bench_draft_gain.py \\
           --model gemma3-270m --prompts 32 --lookup-tokens 0 2 0 2
Prints one JSON line per run. Run it alone on a quiet machine: the runs alternate,
and their spread is the machine's noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_throughput as bt  # noqa: E402 - the bench folder is not a package

from interpreter.definitions import ModelDef  # noqa: E402
from interpreter.llm.llama_backend import LlamaBackend  # noqa: E402
from interpreter.model_actor import run_model_wave  # noqa: E402


def one_run(source: str, prompts: int, lookup: int, schema_on: bool) -> dict:
    model = ModelDef("bench", source, n_ctx=2048, sampling={"lookup_tokens": lookup},
                     parallel=1)
    wf = bt.workflow(model, schema_on)
    backend = LlamaBackend(model)
    try:
        pool = bt.OneBackend(backend)
        started = time.perf_counter()
        generated = 0
        for number, subjects in bt.waves(prompts):
            for r in run_model_wave(pool, wf, wf.steps[number], subjects):
                generated += r.audit.get("completion_tokens", 0)
        wall = time.perf_counter() - started
        decoder = backend.decoder
        gains = [{"kind": "free text" if not key else f"grammar {i}",
                  **{k: round(v, 5) if isinstance(v, float) else v
                     for k, v in dataclasses.asdict(g).items()}}
                 for i, (key, g) in enumerate(decoder.gains.items())]
        return {"bench": "draft_gain", "model": source, "schema": schema_on,
                "lookup_tokens": lookup, "prompts": prompts, "wall_s": round(wall, 2),
                "generated_tokens": generated,
                "generated_per_s": round(generated / wall, 1),
                "drafted": decoder.drafted, "accepted": decoder.accepted, "gains": gains,
                "loadavg": [round(x, 2) for x in os.getloadavg()]}
    finally:
        backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--schema", action="store_true", help="with the steps' output schemas")
    ap.add_argument("--lookup-tokens", type=int, nargs="+", default=[0, 2, 0, 2])
    args = ap.parse_args()
    for lookup in args.lookup_tokens:
        print(json.dumps(one_run(args.model, args.prompts, lookup, args.schema)), flush=True)


if __name__ == "__main__":
    main()
