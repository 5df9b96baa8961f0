"""Rewind 100,000 subjects in one action, while a worker runs a cheap workflow.

In one run, on one PostgreSQL server, in a scratch database:
  * workflow 9101 holds N subjects (default 100,000), all done, with one
    successful checkpoint each at its last step (as after a run);
  * workflow 9102 is a cheap loop (a gate and a SQL no-op, 2,000 subjects going
    round) that one `interp run` worker process drives the whole time;
  * it alternates windows without an action (the baseline) and `interp rewind`
    of all N subjects of 9101 to step 1 (operator_actions.act, in process: one
    statement), --rounds times, and reports the rewind's wall time and the
    worker's transitions/s (its checkpoints per second, on the database's clock)
    in each window.

One JSON object goes to stdout, a readable summary to stderr.

    .venv/bin/python bench/bench_rewind.py                 # 100,000 subjects, 3 rounds
    .venv/bin/python bench/bench_rewind.py --subjects 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import admin_exec, log, with_dbname  # noqa: E402

from interpreter.config import DatabaseChoice  # noqa: E402
from interpreter.db import Database  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402
from interpreter.operator_actions import Selection, act  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REWOUND, LOOP = 9101, 9102

SETUP_SQL = """
CREATE TABLE public.rw_items (id bigint PRIMARY KEY);
INSERT INTO public.rw_items SELECT g FROM generate_series(1, %(n)s) g;
CREATE TABLE public.loop_items (id bigint PRIMARY KEY);
INSERT INTO public.loop_items SELECT g FROM generate_series(1, %(loop_n)s) g;
INSERT INTO interp.actors (name, kind, target) VALUES ('rw_noop', 'sql', 'SELECT 1 WHERE false');
INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) VALUES
  (%(rw)s, 'bench: rewound', 'public.rw_items', 'id'),
  (%(loop)s, 'bench: cheap loop', 'public.loop_items', 'id');
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, gate_sql, params)
VALUES
  (%(rw)s, 1, 'gate', 'gate', NULL,
   'SELECT id::text AS subject_id, ''RUN'' AS outcome FROM public.rw_items
     WHERE id = ANY(%%(ids)s::bigint[])', '{}'),
  (%(rw)s, 2, 'noop', 'actor', 'rw_noop', NULL, '{}'),
  (%(loop)s, 1, 'gate', 'gate', NULL,
   'SELECT id::text AS subject_id, ''RUN'' AS outcome FROM public.loop_items
     WHERE id = ANY(%%(ids)s::bigint[])', '{"max_visits": 1000000000}'),
  (%(loop)s, 2, 'noop', 'actor', 'rw_noop', NULL, '{"max_visits": 1000000000}');
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES
  (%(rw)s, 1, 'RUN', 2), (%(rw)s, 2, 'DONE', NULL),
  (%(loop)s, 1, 'RUN', 2), (%(loop)s, 1, 'SKIP', NULL), (%(loop)s, 2, 'DONE', 1);
INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) VALUES
  (%(rw)s, 'all', 'SELECT id AS subject_id FROM public.rw_items', 1),
  (%(loop)s, 'all', 'SELECT id AS subject_id FROM public.loop_items', 1);
-- workflow 9101 as after a run: every subject done, with its two checkpoints
INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step, status, visits)
SELECT %(rw)s, id::text, 'all', NULL, 'done', 2 FROM public.rw_items;
INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok, outcome,
                                started_at, finished_at)
SELECT %(rw)s, id::text, s.step, s.step - 1, 1, true, CASE s.step WHEN 1 THEN 'RUN' ELSE 'DONE' END,
       now() - interval '1 hour', now() - interval '1 hour'
  FROM public.rw_items, (VALUES (1), (2)) AS s(step);
ANALYZE;
"""


def loop_rate(conn: psycopg.Connection[Any], t0: Any, t1: Any) -> float:
    n = conn.execute("SELECT count(*) FROM interp.checkpoints WHERE workflow_id = %s "
                     "AND finished_at >= %s AND finished_at < %s", (LOOP, t0, t1)).fetchone()[0]
    seconds = (t1 - t0).total_seconds()
    return n / seconds if seconds > 0 else 0.0


def now(conn: psycopg.Connection[Any]) -> Any:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-dsn", default=os.environ.get("INTERP_TEST_DSN", DEFAULT_ADMIN_DSN))
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-s", type=float, default=8.0)
    args = ap.parse_args()

    name = f"interp_bench_rewind_{os.getpid()}"
    admin_exec(args.admin_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(args.admin_dsn, name)
    worker = None
    worker_log = open(f"/tmp/{name}.worker.log", "w")  # noqa: SIM115 - closed in finally
    try:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            psycopg.ClientCursor(conn).execute(SETUP_SQL, {
                "n": args.subjects, "loop_n": 2000, "rw": REWOUND, "loop": LOOP})
        env = dict(os.environ, INTERP_DSN=dsn, PYTHONPATH=str(ROOT))
        worker = subprocess.Popen([sys.executable, "-m", "interpreter", "run", "--workflow",
                                   str(LOOP), "--quiet", "--batch-size", "500"],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=worker_log)
        db = Database(DatabaseChoice(dsn, "bench"))
        rounds = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            time.sleep(5)  # the worker starts and admits its subjects
            for i in range(args.rounds):
                b0 = now(conn)
                time.sleep(args.baseline_s)
                b1 = now(conn)
                r0 = now(conn)
                t = time.perf_counter()
                result = act(db, "rewind", REWOUND, Selection(everything=True),
                             reason=f"bench round {i + 1}", to_step=1)
                wall = time.perf_counter() - t
                r1 = now(conn)
                time.sleep(0.5)  # the worker's waves that finished inside the window commit
                rnd = {"round": i + 1, "changed": result["changed"], "skipped": result["skipped"],
                       "rewind_wall_s": round(wall, 3),
                       "baseline_transitions_per_s": round(loop_rate(conn, b0, b1), 1),
                       "during_rewind_transitions_per_s": round(loop_rate(conn, r0, r1), 1)}
                rounds.append(rnd)
                log(f"round {i + 1}: rewind of {result['changed']} subjects took {wall:.2f} s; "
                    f"worker {rnd['baseline_transitions_per_s']}/s without, "
                    f"{rnd['during_rewind_transitions_per_s']}/s during")
        db.close()
        out = {"subjects": args.subjects, "rounds": rounds,
               "loadavg": Path("/proc/loadavg").read_text().split()[:3],
               "cpus": os.cpu_count()}
        print(json.dumps(out, indent=2))
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        worker_log.close()
        admin_exec(args.admin_dsn,
                   sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
