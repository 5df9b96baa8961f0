"""Benchmark: `interp status` and `interp prune` at 1M subjects / ~10M checkpoints.

Builds a scratch database (dropped at the end unless --keep), generates the
data with INSERT ... SELECT generate_series, then measures:

- status_data(): median of 5 (target < 200 ms), after one warm-up; beside it the
  step query as status ran it before it turned JIT off for its read (the
  server's JIT settings: its cost estimate can cross jit_above_cost) and the
  dead tuples it was measured on. Autovacuum is off on the scratch database's
  interp tables after the load, so "after prune" is measured as a user met it:
  after the prune and the workload, before autovacuum's turn;
- the raw-table queries the rollups replace (why 0002 keeps rollups);
- prune at that size: rows deleted per second;
- a concurrent engine-like workload (claim + checkpoint + advance, 100
  subjects per transaction): its throughput before and while prune runs.

Prints one JSON object. Usage:

    INTERP_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres \
        python bench/bench_status.py --subjects 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interpreter.config import DatabaseChoice  # noqa: E402
from interpreter.db import Database  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402
from interpreter.ops.prune import prune
from interpreter.ops.status import status_data  # noqa: E402

WF = 3001
STEPS = 20


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dsn_for(admin: str, name: str) -> str:
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    return make_conninfo(**params)


DEFINITIONS = f"""
INSERT INTO interp.actors (name, kind, target) VALUES
    ('b_sql', 'sql', 'SELECT 1'), ('b_model_a', 'model', 'a'), ('b_model_b', 'model', 'b');
INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key)
VALUES ({WF}, 'bench', 'public.postings', 'posting_id');
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor)
SELECT {WF}, k, 'Step number ' || k,  'actor',
       CASE WHEN k % 3 = 0 THEN 'b_model_a' WHEN k % 3 = 1 THEN 'b_sql' ELSE 'b_model_b' END
  FROM generate_series(1, {STEPS}) k;
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step)
SELECT {WF}, k, '*', CASE WHEN k < {STEPS} THEN k + 1 END FROM generate_series(1, {STEPS}) k;
"""

# Subject i: r = i % 200. r < 140: done (70%), r = 190: leased, r in 191..192:
# dead, else ready (ready/leased/dead sit at step 1 + i*7 % 16).
SUBJECTS = """
INSERT INTO interp.subject_state (workflow_id, subject_id, step, status, attempts, lease_owner,
                                  lease_expires, next_attempt_at, updated_at, last_error)
SELECT %(wf)s, lpad(i::text, 8, '0'),
       CASE WHEN i %% 200 < 140 THEN NULL ELSE 1 + (i * 7) %% 16 END,
       CASE WHEN i %% 200 < 140 THEN 'done' WHEN i %% 200 = 190 THEN 'leased'
            WHEN i %% 200 IN (191, 192) THEN 'dead' ELSE 'ready' END,
       CASE WHEN i %% 200 IN (191, 192) THEN 3 ELSE 0 END,
       CASE WHEN i %% 200 = 190 THEN 'bench' END,
       CASE WHEN i %% 200 = 190 THEN now() + interval '1 hour' END,
       now() - (%(n)s - i) * interval '1 ms', now(),
       CASE WHEN i %% 200 IN (191, 192) THEN 'boom' END
  FROM generate_series(1, %(n)s::int) i
"""

# Done subjects: steps 1..10 ok; every 4th also failed once first at steps
# 1..4. Others: ok at steps below their current one (dead: 3 errors there).
# Time: subject i finishes around now - 7 days * (1 - i/n), so the newest
# subjects are recent and the oldest are a week old.
CHECKPOINTS = """
INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok, outcome,
                                error, started_at, finished_at, model, seed, prompt_tokens,
                                completion_tokens, gen_ms)
SELECT %(wf)s, lpad(s.i::text, 8, '0'), k.k, 1, a.a, a.ok,
       CASE WHEN a.ok THEN 'PASS' ELSE 'ERROR' END,
       CASE WHEN a.ok THEN NULL ELSE 'transient failure' END,
       t - interval '50 ms', t,
       CASE WHEN k.k %% 3 <> 1 THEN 'model-' || (k.k %% 3) END,
       CASE WHEN k.k %% 3 <> 1 THEN 42 END,
       CASE WHEN k.k %% 3 <> 1 THEN 300 END,
       CASE WHEN k.k %% 3 <> 1 THEN 60 END,
       CASE WHEN k.k %% 3 <> 1 THEN 800 END
  FROM generate_series(%(lo)s::int, %(hi)s::int) s(i)
 CROSS JOIN LATERAL generate_series(
         1, CASE WHEN s.i %% 200 < 140 THEN 10
                 ELSE (s.i * 7) %% 16 + CASE WHEN s.i %% 200 IN (191, 192) THEN 1 ELSE 0 END
            END) k(k)
 CROSS JOIN LATERAL (
     SELECT 1 AS a, false AS ok WHERE s.i %% 200 < 140 AND s.i %% 4 = 0 AND k.k <= 4
     UNION ALL
     SELECT CASE WHEN s.i %% 200 < 140 AND s.i %% 4 = 0 AND k.k <= 4 THEN 2 ELSE 1 END, true
      WHERE NOT (s.i %% 200 IN (191, 192) AND k.k = 1 + (s.i * 7) %% 16)
     UNION ALL
     SELECT g, false FROM generate_series(1, 3) g
      WHERE s.i %% 200 IN (191, 192) AND k.k = 1 + (s.i * 7) %% 16) a
 CROSS JOIN LATERAL (SELECT now() - interval '7 days' * (1 - s.i::float8 / %(n)s)
                            + k.k * interval '20 ms' + a.a * interval '5 ms' AS t) tt
"""

RUNS = """
INSERT INTO interp.runs (workflow_id, worker_id, host, pid, definition_version, started_at,
                         status, finished_at)
SELECT %(wf)s, 'w' || r, 'bench', r, 1, now() - (8 - r) * interval '1 day',
       CASE WHEN r = 8 THEN 'running' ELSE 'finished' END,
       CASE WHEN r < 8 THEN now() - (7 - r) * interval '1 day' END
  FROM generate_series(1, 8) r;
INSERT INTO interp.waves (workflow_id, step, run_id, size, model, claimed_at, started_at,
                          finished_at, committed, busy_ms)
SELECT %(wf)s, 1 + w %% 20, r.run_id, 100, CASE WHEN w %% 3 <> 1 THEN 'model-' || (w %% 3) END,
       r.started_at + w * interval '800 ms', r.started_at + w * interval '800 ms',
       r.started_at + w * interval '800 ms' + interval '700 ms', 100, 650
  FROM interp.runs r, generate_series(1, %(waves)s::int) w;
INSERT INTO interp.model_events (run_id, worker_id, event, model, from_model, duration_ms, at)
SELECT r.run_id, r.worker_id, CASE WHEN e = 1 THEN 'load' ELSE 'switch' END,
       'model-' || (e %% 2), CASE WHEN e > 1 THEN 'model-' || ((e + 1) %% 2) END, 1800,
       r.started_at + e * interval '10 minutes'
  FROM interp.runs r, generate_series(1, 40) e;
"""


def drop_checkpoint_indexes(conn) -> list[str]:
    """Bulk load without secondary indexes, then build them once (far faster)."""
    ddl = [r["d"] for r in conn.execute(
        "SELECT pg_get_indexdef(i.indexrelid) AS d FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'interp.checkpoints'::regclass AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)")]
    cons = [r for r in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) AS d FROM pg_constraint "
        "WHERE conrelid = 'interp.checkpoints'::regclass AND contype = 'u'")]
    for r in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'interp.checkpoints'::regclass AND NOT i.indisprimary "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
    ).fetchall():
        conn.execute(f'DROP INDEX interp."{r["relname"]}"')
    for r in cons:
        conn.execute(f'ALTER TABLE interp.checkpoints DROP CONSTRAINT "{r["conname"]}"')
    return ddl + [f'ALTER TABLE interp.checkpoints ADD CONSTRAINT "{r["conname"]}" {r["d"]}'
                  for r in cons]


def generate(dsn: str, n: int) -> dict:
    figures = {}
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET work_mem = '256MB'")
        conn.execute(DEFINITIONS)
        conn.execute("ALTER TABLE interp.checkpoints DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE interp.subject_state DISABLE TRIGGER USER")
        t = time.monotonic()
        conn.execute(SUBJECTS, {"wf": WF, "n": n})
        figures["subjects_s"] = round(time.monotonic() - t, 1)
        log(f"subjects: {n} in {figures['subjects_s']}s")
        rebuild = drop_checkpoint_indexes(conn)
        t = time.monotonic()
        chunk = max(1, n // 8)
        for lo in range(1, n + 1, chunk):
            conn.execute(CHECKPOINTS, {"wf": WF, "n": n, "lo": lo, "hi": min(n, lo + chunk - 1)})
            log(f"checkpoints: subjects up to {min(n, lo + chunk - 1)}")
        figures["checkpoints_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        for ddl in rebuild:
            conn.execute(ddl)
        figures["indexes_s"] = round(time.monotonic() - t, 1)
        for stmt in filter(str.strip, RUNS.split(";\n")):
            conn.execute(stmt, {"wf": WF, "waves": max(10, n // 100)})
        conn.execute("ALTER TABLE interp.checkpoints ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE interp.subject_state ENABLE TRIGGER USER")
        t = time.monotonic()
        conn.execute("SELECT interp.rebuild_ops_rollups()")
        figures["rollup_rebuild_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        conn.execute("VACUUM ANALYZE")
        figures["vacuum_analyze_s"] = round(time.monotonic() - t, 1)
        # The conditions of issue 22 (status after a prune and a busy hour): the
        # dead tuples stay until something analyzes, as before autovacuum's turn.
        for table in ("checkpoints", "subject_state", "checkpoint_totals",
                      "checkpoint_minutes", "subject_counts"):
            conn.execute(f"ALTER TABLE interp.{table} SET (autovacuum_enabled = off)")
        figures["checkpoints"] = conn.execute(
            "SELECT count(*) AS n FROM interp.checkpoints").fetchone()["n"]
        figures["subjects"] = n
        figures["db_size"] = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database())) AS s").fetchone()["s"]
    return figures


# The step query as status ran it before it turned JIT off for its read (issue 22):
# with the server's JIT settings, which its cost estimate can cross.
STEP_QUERY = ("SELECT * FROM interp.step_status(%s, make_interval(secs => 600), "
              "make_interval(secs => 300))")


def table_conditions(conn) -> dict:
    """What the planner's estimates stand on: dead tuples and the last analyze."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return {r["relname"]: {"n_live_tup": r["n_live_tup"], "n_dead_tup": r["n_dead_tup"],
                           "n_mod_since_analyze": r["n_mod_since_analyze"],
                           "analyzed": str(r["analyzed"]) if r["analyzed"] else None}
            for r in conn.execute(
                "SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze, "
                "greatest(last_analyze, last_autoanalyze) AS analyzed "
                "FROM pg_stat_user_tables WHERE schemaname = 'interp' "
                "AND relname IN ('checkpoints', 'subject_state') ORDER BY relname")}


def step_query_with_server_jit(conn, repeats: int) -> dict:
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + STEP_QUERY, (WF,)).fetchone()
    plan = plan[next(iter(plan))][0]
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        conn.execute(STEP_QUERY, (WF,)).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return {"estimated_cost": plan["Plan"]["Total Cost"],
            "jit": conn.execute("SELECT current_setting('jit') AS v").fetchone()["v"],
            "jit_above_cost": float(conn.execute(
                "SELECT current_setting('jit_above_cost') AS v").fetchone()["v"]),
            "ms_median": round(statistics.median(times[1:]), 1)}


def time_status(dsn: str, repeats: int = 5) -> dict:
    with psycopg.connect(dsn, row_factory=dict_row, autocommit=True) as conn:
        conditions = table_conditions(conn)
        status_data(conn, WF)  # warm-up: plans, caches
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            data = status_data(conn, WF)
            times.append((time.perf_counter() - t) * 1000)
        old_read = step_query_with_server_jit(conn, repeats)
        # what the rollups replace: the same figures from the raw tables
        raw = {}
        t = time.perf_counter()
        conn.execute("SELECT step, count(DISTINCT subject_id) FROM interp.checkpoints "
                      "WHERE workflow_id = %s AND ok GROUP BY step", (WF,)).fetchall()
        raw["done_per_step_from_checkpoints_ms"] = round((time.perf_counter() - t) * 1000, 1)
        t = time.perf_counter()
        conn.execute("SELECT step, status, count(*) FROM interp.subject_state "
                     "WHERE workflow_id = %s GROUP BY 1, 2", (WF,)).fetchall()
        raw["subject_state_group_by_ms"] = round((time.perf_counter() - t) * 1000, 1)
    return {"status_data_ms_median": round(statistics.median(times), 1),
            "status_data_ms_all": [round(x, 1) for x in times],
            "tables": conditions,
            "step_query_with_server_jit": old_read,
            "status_total_checkpoints": data["totals"]["checkpoints"],
            "status_subjects": data["totals"]["subjects"],
            "raw_queries_the_rollups_replace": raw}


class Workload(threading.Thread):
    """Engine-like waves: claim 100 due subjects of a step, write their checkpoints
    (trigger-maintained rollups included), advance them; one transaction per wave."""

    WAVE = """
    WITH picked AS (
        SELECT subject_id, step FROM interp.subject_state
         WHERE workflow_id = %(wf)s AND step = %(step)s AND status = 'ready'
           AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT 100 FOR UPDATE SKIP LOCKED
    ), cp AS (
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
                                        outcome, started_at, finished_at)
        SELECT %(wf)s, subject_id, step, 1, 1, true, 'PASS', now(), clock_timestamp()
          FROM picked
        ON CONFLICT DO NOTHING
    )
    UPDATE interp.subject_state s
       SET step = CASE WHEN s.step < 20 THEN s.step + 1 END,
           status = CASE WHEN s.step < 20 THEN 'ready' ELSE 'done' END,
           next_attempt_at = now(), updated_at = now()
      FROM picked WHERE s.workflow_id = %(wf)s AND s.subject_id = picked.subject_id
    """

    def __init__(self, dsn: str, interval: float | None = None):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval  # None: as fast as it goes; else one wave per interval
        self.latencies: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.rows = 0
        self.errors: list[str] = []
        self.marks: list[tuple[float, int]] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            k = 0
            next_at = time.monotonic()
            while not self.stop.is_set():
                if self.interval:
                    next_at += self.interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                step = 1 + k % 16
                k += 1
                started = time.monotonic()
                try:
                    with conn.transaction():
                        cur = conn.execute(self.WAVE, {"wf": WF, "step": step})
                        self.rows += cur.rowcount
                except psycopg.errors.OperationalError as exc:  # deadlock etc.: count, go on
                    self.errors.append(str(exc).splitlines()[0])
                self.marks.append((time.monotonic(), self.rows))
                self.latencies.append((started, (time.monotonic() - started) * 1000))

    def rate(self, t0: float, t1: float) -> float:
        inside = [(t, r) for t, r in self.marks if t0 <= t <= t1]
        if len(inside) < 2:
            return 0.0
        (ta, ra), (tb, rb) = inside[0], inside[-1]
        return (rb - ra) / (tb - ta) if tb > ta else 0.0

    def p95_ms(self, t0: float, t1: float) -> float | None:
        xs = sorted(ms for t, ms in self.latencies if t0 <= t <= t1)
        return round(xs[int(0.95 * (len(xs) - 1))], 1) if xs else None


def bench_prune(dsn: str, older_than_days: float, baseline_s: float,
                interval: float | None) -> dict:
    import datetime as dt

    db = Database(DatabaseChoice(dsn, "bench"), db_timeout=60)
    work = Workload(dsn, interval)
    work.start()
    time.sleep(1)
    t0 = time.monotonic()
    time.sleep(baseline_s)
    t1 = time.monotonic()
    result = prune(db, WF, dt.timedelta(days=older_than_days), batch_size=5000)
    t2 = time.monotonic()
    work.stop.set()
    work.join()
    db.close()
    before, during = work.rate(t0, t1), work.rate(t1, t2)
    return {
        "workload": "saturating" if interval is None else f"paced, 100 subjects per {interval}s",
        "prune_older_than_days": older_than_days,
        "prune_deleted": result["deleted"],
        "prune_batches": result["batches"],
        "prune_seconds": result["seconds"],
        "prune_rows_per_s": round(result["deleted"] / result["seconds"]) if result["seconds"]
        else None,
        "workload_subjects_per_s_before": round(before),
        "workload_subjects_per_s_during_prune": round(during),
        "workload_ratio_during_vs_before": round(during / before, 3) if before else None,
        "wave_p95_ms_before": work.p95_ms(t0, t1),
        "wave_p95_ms_during_prune": work.p95_ms(t1, t2),
        "workload_errors": work.errors[:5],
        "workload_error_count": len(work.errors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN")
                    or os.environ.get("INTERP_TEST_DSN"))
    ap.add_argument("--prune-older-than-days", type=float, default=1.0)
    ap.add_argument("--baseline-s", type=float, default=10.0)
    ap.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    args = ap.parse_args()
    if not args.dsn:
        sys.exit("set INTERP_BENCH_DSN (a server where the bench may create a database)")
    name = f"interp_bench_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(args.dsn, name)
    out: dict = {"database": name}
    try:
        migrate(dsn)
        t = time.monotonic()
        out["generate"] = gen = generate(dsn, args.subjects)
        gen["total_s"] = round(time.monotonic() - t, 1)
        log(f"generated {gen['checkpoints']} checkpoints in {gen['total_s']}s")
        out["status"] = time_status(dsn)
        log(f"status_data median {out['status']['status_data_ms_median']} ms")
        # Half the prunable history with a workload that saturates the server (the
        # worst case), the rest with one paced like a busy real run.
        out["prune_saturating"] = bench_prune(dsn, 4.0, args.baseline_s, None)
        log(f"prune {out['prune_saturating']}")
        out["prune_paced"] = bench_prune(dsn, args.prune_older_than_days, args.baseline_s, 0.2)
        log(f"prune {out['prune_paced']}")
        out["status_after_prune"] = time_status(dsn)
        with psycopg.connect(dsn) as conn:
            out["server"] = conn.execute("SHOW server_version").fetchone()[0]
        out["cpus"] = os.cpu_count()
    finally:
        if not args.keep:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
