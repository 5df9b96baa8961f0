"""Where the time goes: a model step's time split into prompt processing, token
generation and sampling (grammar checks included), per model, with and without
the output schema.

Two prompt sets, each run through ``model_actor.run_model_wave`` exactly as the
model lane runs them (validation and re-asks included, ``reask`` 1), on one
``LlamaBackend`` (the sequential lane, ``parallel`` 1; with N sequences a decode
step is shared and cannot be split per subject):

- ``3001``: ``--prompts`` generated postings (``actors.sample_postings``, edge
  cases left out) dealt over four of workflow 3001's model steps (Extract,
  Grade, Extract skills, IHL verdict) with their templates, schemas and
  ``max_tokens`` from ``seeds/3001_job_pipeline.sql`` (``bench_throughput.py``
  builds them the same way);
- ``plain``: ``--plain`` postings through one short extraction prompt (title,
  company, remote, seniority; 64 tokens at most).

For every (model, prompt set, schema) it sums what each generation reports
(``models.Generation``: ``gen_ms``, ``prompt_ms``, tokens, grammar rejections,
full-vocabulary masks) and what ``sampling_clock.timed_sampling`` measures:

- prompt: decoding the prompt (after the KV prefix kept from the last call);
- sampling: choosing each token, the grammar's checks and fallbacks included
  (``grammar`` is that part alone); setup: building the sampler chain and
  parsing the grammar, once per generation;
- generation: the rest of the generation, i.e. the decode steps of the
  generated tokens (plus detokenizing and stop checks);
- other: the wave's wall time outside the generations (templates, tokenizing,
  validation).

Then, per model, llama-cpp-python's own grammar path (the path interp used
before ``llama_decode``; its sampler chain applies the grammar before top-k and
greedy, so every token costs one grammar pass over the whole vocabulary):

- one full-vocabulary pass, timed directly: a greedy grammar-first loop with
  llama.cpp's grammar sampler (the one llama-cpp-python adds to its chain)
  applied to all ``n_vocab`` logits at every token of a constrained answer,
  beside the decode step of each token;
- the path end to end, as ``bench_grammar.py`` does: ``create_completion`` with
  and without the grammar over the same cached prompts, milliseconds per token.

Greedy (temperature 0; steps with a repeat penalty keep it). Prints a table
(stdout) and progress (stderr); ``--json FILE`` also writes the figures.

    python bench/bench_time_split.py --quick     # 4 + 2 prompts, 32 tokens at most
    python bench/bench_time_split.py             # 16 + 8 prompts, the steps' max_tokens
    python bench/bench_time_split.py --models gemma3-270m --schema on --threads 1
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from bench_throughput import DEFAULT_MODELS, OneBackend, waves  # noqa: E402
from bench_throughput import workflow as workflow_3001  # noqa: E402
from sampling_clock import timed_sampling  # noqa: E402
from tabulate import tabulate  # noqa: E402

from interpreter.actor_api import Subject  # noqa: E402
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow  # noqa: E402
from interpreter.llm.backend import Generation  # noqa: E402
from interpreter.llm.llama_backend import LlamaBackend  # noqa: E402
from interpreter.llm.token_sampling import TOKEN_DATA  # noqa: E402
from interpreter.model_actor import run_model_wave  # noqa: E402

PLAIN_TEMPLATE = ("Extract from this job posting the job title, the company, whether the "
                  "job is remote and its seniority. Answer in JSON.\n"
                  "Title: {{ title }}\nCompany: {{ company }}\nLocation: {{ location }}\n"
                  "{{ description | truncate(400) }}")
PLAIN_SCHEMA = {"type": "object",
                "properties": {"title": {"type": "string", "maxLength": 60},
                               "company": {"type": "string", "maxLength": 60},
                               "remote": {"type": "boolean"},
                               "seniority": {"type": "string",
                                             "enum": ["junior", "mid", "senior"]}},
                "required": ["title", "company", "remote", "seniority"],
                "additionalProperties": False}
PLAIN_MAX_TOKENS = 64


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ prompt sets

def plain_workflow(model: ModelDef, schema_on: bool) -> Workflow:
    step = StepDef(workflow_id=1, number=1, name="Plain extraction", kind="actor",
                   actor="bench_actor", template="plain",
                   output_schema=PLAIN_SCHEMA if schema_on else None, timeout_s=3600,
                   params={"max_tokens": PLAIN_MAX_TOKENS})
    return Workflow(id=1, name="plain", description="", subject_table="postings",
                    subject_key="posting_id", paused=False, version=1, steps={1: step},
                    transitions={}, entry_points=[],
                    actors={"bench_actor": ActorDef("bench_actor", "model", model.name,
                                                    {"reask": 1})},
                    models={model.name: model}, templates={"plain": PLAIN_TEMPLATE})


def plain_waves(n_prompts: int) -> list[tuple[int, list[Subject]]]:
    """One wave of n_prompts postings (the same postings 3001's set starts with)."""
    subjects = [s for _, wave in waves(n_prompts) for s in wave][:n_prompts]
    return [(1, subjects)]


def plain_text(subject: Subject) -> str:
    """The plain extraction prompt for one posting, rendered as the model actor renders it."""
    from interpreter.templates import build_context, render

    step = StepDef(workflow_id=1, number=1, name="Plain extraction", kind="actor")
    return render(PLAIN_TEMPLATE, build_context(subject, step))


def capped(wf: Workflow, max_tokens: int | None) -> Workflow:
    """wf with every step's max_tokens cut to max_tokens (None: as they are)."""
    if max_tokens is None:
        return wf
    steps = {n: dataclasses.replace(s, params={**s.params, "max_tokens": min(
        int(s.params.get("max_tokens", max_tokens)), max_tokens)}) for n, s in wf.steps.items()}
    return dataclasses.replace(wf, steps=steps)


# ------------------------------------------------------------------ the split

class RecordingBackend:
    """The loaded backend, recording every Generation it returns (the model actor
    keeps only the audit's sums; the split needs prompt_ms and the grammar counts)."""

    def __init__(self, backend: LlamaBackend):
        self.backend = backend
        self.generations: list[Generation] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def generate(self, *args: Any, **kwargs: Any) -> Generation:
        gen = self.backend.generate(*args, **kwargs)
        self.generations.append(gen)
        return gen


def split_time(backend: LlamaBackend, wf: Workflow, wave_list: list[tuple[int, list[Subject]]]
               ) -> dict[str, Any]:
    """Runs the waves and splits their time (milliseconds, and shares of the wall time)."""
    recorder = RecordingBackend(backend)
    pool = OneBackend(recorder)  # type: ignore[arg-type]
    subjects = 0
    with timed_sampling() as clock:
        started = time.perf_counter()
        for number, subs in wave_list:
            run_model_wave(pool, wf, wf.steps[number], subs)
            subjects += len(subs)
        wall_ms = (time.perf_counter() - started) * 1000
    gens = recorder.generations
    gen_ms = sum(g.gen_ms for g in gens)
    prompt_ms = sum(g.prompt_ms for g in gens)
    sample_ms, grammar_ms, setup_ms = (clock.sample_s * 1000, clock.grammar_s * 1000,
                                       clock.setup_s * 1000)
    ms = {"prompt": prompt_ms, "generation": gen_ms - prompt_ms - sample_ms - setup_ms,
          "sampling": sample_ms, "setup": setup_ms, "other": wall_ms - gen_ms}
    prompt_tokens = sum(g.prompt_tokens for g in gens)
    completion = sum(g.completion_tokens for g in gens)
    return {"subjects": subjects, "generations": len(gens), "wall_ms": round(wall_ms, 1),
            "ms": {k: round(v, 1) for k, v in ms.items()},
            "share": {k: round(v / wall_ms, 3) if wall_ms else None for k, v in ms.items()},
            "grammar_ms": round(grammar_ms, 1),
            "prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "sampled_tokens": clock.tokens,
            "prompt_per_s": round(prompt_tokens / prompt_ms * 1000, 1) if prompt_ms else None,
            "generated_per_s": (round(completion / (gen_ms - prompt_ms) * 1000, 1)
                                if gen_ms > prompt_ms else None),
            "sampling_ms_per_token": (round(sample_ms / clock.tokens, 3)
                                      if clock.tokens else None),
            "grammar_rejections": sum(g.grammar_rejections for g in gens),
            "full_vocab_masks": sum(g.full_vocab_masks for g in gens)}


# ------------------------------------------------------------------ the old path

def grammar_first_passes(backend: LlamaBackend, messages: list[dict[str, str]],
                         max_tokens: int) -> tuple[list[float], list[float]]:
    """(ms of each full-vocabulary grammar pass, ms of each decode step) of a greedy
    grammar-first answer: at every token llama.cpp's grammar sampler is applied to
    all n_vocab logits, as in llama-cpp-python's chain, and the best allowed token
    is taken."""
    import llama_cpp.llama_cpp as lc

    llama = backend.llama
    vocab = lc.llama_model_get_vocab(llama.model)
    n_vocab = int(llama.n_vocab())
    grammar = lc.llama_sampler_init_grammar(vocab, backend.grammar_for(PLAIN_SCHEMA)
                                            .encode("utf-8"), b"root")
    candidates = np.zeros(n_vocab, dtype=TOKEN_DATA)
    ids = np.arange(n_vocab, dtype=np.intc)
    passes: list[float] = []
    decodes: list[float] = []
    try:
        prompt, _ = backend.prompt_tokens(messages)
        llama.reset()
        llama.eval(prompt)
        for _ in range(max_tokens):
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llama.ctx, -1),
                                           shape=(n_vocab,))
            candidates["id"] = ids
            candidates["logit"] = logits
            candidates["p"] = 0.0
            array = lc.llama_token_data_array(
                data=candidates.ctypes.data_as(lc.llama_token_data_p), size=n_vocab,
                selected=-1, sorted=False)
            started = time.perf_counter()
            lc.llama_sampler_apply(grammar, ctypes.byref(array))
            passes.append((time.perf_counter() - started) * 1000)
            token = int(candidates["id"][int(np.argmax(candidates["logit"]))])
            if lc.llama_vocab_is_eog(vocab, token):
                break
            lc.llama_sampler_accept(grammar, token)
            started = time.perf_counter()
            llama.eval([token])
            decodes.append((time.perf_counter() - started) * 1000)
    finally:
        lc.llama_sampler_free(grammar)
        llama.reset()
    return passes, decodes


def old_path(backend: LlamaBackend, prompts: list[list[dict[str, str]]], max_tokens: int
             ) -> dict[str, Any]:
    """One full-vocabulary grammar pass, and llama-cpp-python's grammar path end to end
    (ms per generated token with and without the grammar, prompts cached)."""
    from llama_cpp import LlamaGrammar

    passes: list[float] = []
    decodes: list[float] = []
    for messages in prompts:
        p, d = grammar_first_passes(backend, messages, max_tokens)
        passes += p
        decodes += d
    grammar = LlamaGrammar.from_json_schema(json.dumps(PLAIN_SCHEMA), verbose=False)
    sides = {"grammar": [0.0, 0], "free": [0.0, 0]}
    for messages in prompts:
        prompt, stop = backend.prompt_tokens(messages)
        backend.llama.reset()
        backend.llama.eval(prompt)     # cached: the timed calls decode one prompt token
        for side, g in (("free", None), ("grammar", grammar)):
            started = time.perf_counter()
            out = backend.llama.create_completion(prompt=prompt, max_tokens=max_tokens,
                                                  temperature=0.0, grammar=g, stop=stop,
                                                  seed=1)
            sides[side][0] += (time.perf_counter() - started) * 1000
            sides[side][1] += out["usage"]["completion_tokens"]  # type: ignore[index]
    backend.llama.reset()
    per_token = {k: round(ms / n, 2) if n else None for k, (ms, n) in sides.items()}
    extra = (round(per_token["grammar"] - per_token["free"], 2)
             if per_token["grammar"] is not None and per_token["free"] is not None else None)
    return {"n_vocab": int(backend.llama.n_vocab()), "passes": len(passes),
            "full_pass_ms_median": round(statistics.median(passes), 2) if passes else None,
            "full_pass_ms_min": round(min(passes), 2) if passes else None,
            "full_pass_ms_max": round(max(passes), 2) if passes else None,
            "decode_step_ms_median": round(statistics.median(decodes), 2) if decodes else None,
            "create_completion_ms_per_token": per_token,
            "grammar_ms_per_token_end_to_end": extra}


# ------------------------------------------------------------------ output

def split_rows(report: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in report:
        s = r["split"]

        def cell(key: str, s: dict[str, Any] = s) -> str:
            share = s["share"][key]
            return f"{s['ms'][key] / 1000:.1f} ({share:.0%})" if share is not None else "-"

        rows.append([r["model_name"], r["prompts"], "on" if r["schema"] else "off",
                     s["generations"], f"{s['wall_ms'] / 1000:.1f}", cell("prompt"),
                     cell("generation"), cell("sampling"), f"{s['grammar_ms'] / 1000:.2f}",
                     cell("setup"), cell("other"), s["prompt_per_s"], s["generated_per_s"],
                     s["sampling_ms_per_token"],
                     f"{s['grammar_rejections']}/{s['full_vocab_masks']}"])
    return rows


SPLIT_HEADERS = ["model", "prompts", "schema", "gens", "wall s", "prompt s (%)",
                 "generation s (%)", "sampling s (%)", "of which grammar s", "setup s (%)",
                 "other s (%)", "prompt tok/s", "gen tok/s", "sample ms/tok",
                 "rejected/full masks"]


def old_path_rows(old: list[dict[str, Any]]) -> list[list[Any]]:
    return [[o["model_name"], o["n_vocab"], o["passes"], o["full_pass_ms_median"],
             f"{o['full_pass_ms_min']}-{o['full_pass_ms_max']}", o["decode_step_ms_median"],
             o["create_completion_ms_per_token"]["free"],
             o["create_completion_ms_per_token"]["grammar"],
             o["grammar_ms_per_token_end_to_end"]] for o in old]


OLD_HEADERS = ["model", "n_vocab", "passes", "full pass ms (median)", "min-max",
               "decode step ms", "ms/tok free", "ms/tok grammar", "grammar ms/tok"]


def short_name(source: str) -> str:
    return Path(source.split("/")[-1]).stem if "/" in source else source


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="4 + 2 prompts, 32 tokens at most, 1 prompt on the old path")
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--prompts", type=int, default=16, help="3001 prompts (4 steps in turn)")
    ap.add_argument("--plain", type=int, default=8, help="plain extraction prompts")
    ap.add_argument("--schema", choices=["both", "on", "off"], default="both")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="cap every step's max_tokens (default: the steps' own)")
    ap.add_argument("--old-prompts", type=int, default=4,
                    help="prompts for llama-cpp-python's own grammar path")
    ap.add_argument("--old-max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None,
                    help="n_threads (default: interp's rule for this machine)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.plain, args.max_tokens = 4, 2, 32
        args.old_prompts, args.old_max_tokens = 1, 24
    schemas = {"both": [True, False], "on": [True], "off": [False]}[args.schema]
    load_start = os.getloadavg()
    report: list[dict[str, Any]] = []
    old: list[dict[str, Any]] = []
    for source in args.models:
        model = ModelDef("bench", source, n_ctx=args.n_ctx, n_threads=args.threads)
        started = time.perf_counter()
        backend = LlamaBackend(model)
        log(f"{source}: loaded in {time.perf_counter() - started:.1f} s "
            f"(n_threads {backend.threads.n_threads}, chat format {backend.chat_format.name})")
        try:
            for prompts, make_wf, wave_list in (
                    ("3001", workflow_3001, waves(args.prompts)),
                    ("plain", plain_workflow, plain_waves(args.plain))):
                for schema_on in schemas:
                    log(f"  {prompts} prompts, schema {'on' if schema_on else 'off'}")
                    wf = capped(make_wf(model, schema_on), args.max_tokens)
                    split = split_time(backend, wf, wave_list)
                    report.append({"model": source, "model_name": short_name(source),
                                   "prompts": prompts, "schema": schema_on, "split": split})
            log("  llama-cpp-python's own grammar path")
            plain = [[{"role": "user", "content": plain_text(s)}]
                     for _, subs in plain_waves(args.old_prompts) for s in subs]
            old.append({"model": source, "model_name": short_name(source),
                        **old_path(backend, plain, args.old_max_tokens)})
        finally:
            backend.close()
    load_end = os.getloadavg()
    print(f"Where the time goes (sequential lane, greedy; load average "
          f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end)")
    print(tabulate(split_rows(report), headers=SPLIT_HEADERS, tablefmt="github"))
    print()
    print("llama-cpp-python's own grammar path: one grammar pass over the whole vocabulary")
    print(tabulate(old_path_rows(old), headers=OLD_HEADERS, tablefmt="github"))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "bench": "time_split", "prompts_3001": args.prompts, "prompts_plain": args.plain,
            "max_tokens_cap": args.max_tokens, "threads": args.threads,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end],
            "split": report, "old_path": old}, indent=1))


if __name__ == "__main__":
    main()
