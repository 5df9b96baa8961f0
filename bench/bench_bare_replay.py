"""The physical limit of a model run: the bare model replaying the same work.

After a run (e.g. `bench/bench_3001.py --count 20 --keep`), every model
checkpoint holds the prompt it was asked (interp.prompts, by sha256), its
prompt and completion token counts, and its model. This script replays that
work on the bare llama-cpp-python model, the way the hardware does it at its
best: the same prompt tokens (the same chat format, so the same length) decoded
and exactly the same number of tokens generated, greedy, with no grammar, no
schema validation, no database, no engine; generation on the threads interp's
rule gives it and every prompt on all usable CPUs. A re-ask shows up
as more prompt tokens than the stored prompt has; the replay decodes the prompt
again for those (a fresh sequence of the same length, which is what a re-ask
costs).

It prints the replay's total seconds per model and overall, and beside it the
run's own figures from the engine's tables: the run's wall time, and the model
lane's busy time (its `generating` intervals, interp.lane_intervals). The
ratio lane time / replay time is the model lane's overhead over the limit.

    .venv/bin/python bench/bench_bare_replay.py --dsn postgresql://postgres@127.0.0.1:5432/interp_bench3001_123

One JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import kept_run_models, stored_messages  # noqa: E402

from interpreter.llm.llama_backend import LlamaBackend, prepare_llama_import, usable_cpus  # noqa: E402

WORK = """
SELECT c.model, c.prompt_tokens, c.completion_tokens, p.body
  FROM interp.checkpoints c
  JOIN interp.prompts p ON p.sha256 = c.prompt_sha256
 WHERE c.model IS NOT NULL AND c.completion_tokens > 0
 ORDER BY c.finished_at
"""
RUN = """
SELECT extract(epoch FROM max(coalesce(finished_at, heartbeat_at)) - min(started_at)) AS wall_s
  FROM interp.runs
"""
LANE = """
SELECT cause, sum(extract(epoch FROM ended_at - started_at)) AS s
  FROM interp.lane_intervals GROUP BY cause
"""


def replay_one(llm: Any, prompt: list[int], prompt_tokens: int, completion: int) -> None:
    """Decode the prompt (again for a re-ask's extra tokens), then generate exactly
    `completion` tokens greedily without a grammar."""
    extra = max(0, prompt_tokens - len(prompt))
    while extra > 0:  # a re-ask: another prompt of about the same length
        chunk = prompt[:extra]
        llm.reset()
        llm.eval(chunk)
        extra -= len(chunk)
    llm.reset()
    made = 0
    for _ in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, reset=True):
        made += 1
        if made >= completion:
            break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True, help="the database of a finished run")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    with psycopg.connect(args.dsn, row_factory=dict_row) as c:
        work = c.execute(WORK).fetchall()
        models = kept_run_models(c, work)
        run = c.execute(RUN).fetchone()
        lane = {r["cause"]: float(r["s"]) for r in c.execute(LANE)} \
            if c.execute("SELECT to_regclass('interp.lane_intervals') AS t").fetchone()["t"] \
            else {}
    per_model: dict[str, dict[str, float]] = {}
    load1 = os.getloadavg()
    prepare_llama_import()
    import llama_cpp.llama_cpp as lc
    for name, model in models.items():
        backend = LlamaBackend(model)  # interp's tokenizer and chat format
        # The hardware at its best on a quiet machine: generation on the threads the
        # rule gives it, every prompt on all usable CPUs. (Not the load-time rule's
        # prompt threads: the load average, lagging behind the previous model's
        # replay, would put later models' prompts on fewer.)
        gen_threads, prompt_threads = backend.threads.n_threads, usable_cpus()
        lc.llama_set_n_threads(backend.llama.ctx, gen_threads, prompt_threads)
        mine = [w for w in work if w["model"] == name]
        t0 = time.perf_counter()
        for w in mine:
            prompt, _ = backend.prompt_tokens(stored_messages(w["body"]))
            replay_one(backend.llama, prompt, int(w["prompt_tokens"] or 0),
                       int(w["completion_tokens"]))
        per_model[name] = {"checkpoints": len(mine),
                           "prompt_tokens": sum(int(w["prompt_tokens"] or 0) for w in mine),
                           "completion_tokens": sum(int(w["completion_tokens"]) for w in mine),
                           "bare_s": round(time.perf_counter() - t0, 2),
                           "threads": gen_threads, "prompt_threads": prompt_threads}
        backend.close()
    bare = sum(m["bare_s"] for m in per_model.values())
    generating = lane.get("generating")
    out = {"bench": "bare_replay", "loadavg_start": load1, "loadavg_end": os.getloadavg(),
           "models": per_model, "bare_s": round(bare, 2),
           "run_wall_s": round(float(run["wall_s"] or 0), 2),
           "lane_s_by_cause": {k: round(v, 2) for k, v in sorted(lane.items())},
           "lane_generating_s": round(generating, 2) if generating else None,
           "ratio_lane_generating_over_bare": round(generating / bare, 3)
           if generating and bare else None,
           "ratio_run_wall_over_bare": round(float(run["wall_s"] or 0) / bare, 3)
           if bare else None}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
