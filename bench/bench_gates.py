"""Gates: one set-based statement per wave against one query per subject.

Over N postings-like rows (default 100,000; a third already "processed", so
the gate answers both RUN and SKIP), in one process, on one server:

  * set-based (what interp does, queries.sql gate_wave): per wave of B ids,
    ONE statement that runs the gate `... WHERE posting_id = ANY(%(ids)s)` as
    a CTE and inserts the wave's checkpoints from it, one commit per wave; no
    gate row travels to the client and back;
  * set-based with the gate rows through the client (interp's general road,
    and its only road before gate_wave): the gate statement, then an
    INSERT ... SELECT FROM unnest(...) of the checkpoints, one commit per wave;
  * per subject (the seed's naive way): for each subject, one gate query
    `... WHERE posting_id = %s`, then one INSERT of its checkpoint and a
    commit: a round trip (and a commit) per subject. It runs over a sample
    (default 5,000 subjects) and its rate is extrapolated to N;
  * for context, per-subject queries with the checkpoints batched per wave
    (one commit per wave), which separates round trips from commits;
  * the engine itself: `Runner` on a one-gate workflow over the same N
    postings (already admitted), which also locks the wave, moves
    subject_state, records the wave and keeps the ops rollups: more work
    per subject than the pattern rows above.

The pattern rows write checkpoint rows with the columns of interp.checkpoints
into a scratch copy of that table (same indexes, no ops triggers), so those
figures are about the gate pattern, not the rest of the engine. Everything
happens in a scratch database (interp_bench_gates_<pid>) dropped at the end.

    .venv/bin/python bench/bench_gates.py            # 100,000 postings, 3 rounds (~40 s)
    .venv/bin/python bench/bench_gates.py --quick    # 20,000 postings, 1,000 sampled
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import admin_exec, log, with_dbname  # noqa: E402

from interpreter.config import DatabaseChoice  # noqa: E402
from interpreter.db import Database  # noqa: E402
from interpreter.engine import Runner, RunOptions  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKFLOW_ID = 9002
ENGINE_WORKFLOW_ID = 9003
STEP = 1

SETUP_SQL = """
CREATE TABLE public.bench_postings (
    posting_id  bigint PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true
);
INSERT INTO public.bench_postings
SELECT g, 'Job ' || g, repeat(md5(g::text) || ' ', 20), g %% 50 <> 0
  FROM generate_series(1, %(n)s) AS g;
CREATE TABLE public.bench_posting_stats (
    posting_id bigint PRIMARY KEY REFERENCES public.bench_postings,
    words      integer NOT NULL
);
INSERT INTO public.bench_posting_stats SELECT g, 120 FROM generate_series(3, %(n)s, 3) AS g;
CREATE TABLE public.bench_gate_checkpoints (LIKE interp.checkpoints
    INCLUDING DEFAULTS INCLUDING INDEXES);
ANALYZE public.bench_postings;
ANALYZE public.bench_posting_stats;
"""

# The gate of seeds/1001_example_word_count.sql, over the bench tables.
GATE_SET = """
SELECT p.posting_id::text AS subject_id,
       CASE WHEN s.posting_id IS NULL THEN 'RUN' ELSE 'SKIP' END AS outcome
  FROM public.bench_postings p LEFT JOIN public.bench_posting_stats s USING (posting_id)
 WHERE p.posting_id = ANY(%(ids)s::bigint[])
"""

GATE_ONE = """
SELECT p.posting_id::text AS subject_id,
       CASE WHEN s.posting_id IS NULL THEN 'RUN' ELSE 'SKIP' END AS outcome
  FROM public.bench_postings p LEFT JOIN public.bench_posting_stats s USING (posting_id)
 WHERE p.posting_id = %(id)s
"""

INSERT_MANY = """
INSERT INTO public.bench_gate_checkpoints
    (workflow_id, subject_id, step, visit, attempt, ok, outcome, started_at, finished_at,
     wave_id, run_id, worker_id)
SELECT %(workflow_id)s, v.subject_id, %(step)s, 0, 1, true, v.outcome, %(started)s, now(),
       %(wave_id)s, 1, 'bench'
  FROM unnest(%(ids)s::text[], %(outcomes)s::text[]) AS v(subject_id, outcome)
"""

# The bench's copy of the engine's gate_wave: the gate as a CTE, the checkpoints
# inserted from it in the same statement (a missing gate row means RUN).
GATE_WAVE = """
WITH g AS MATERIALIZED (
""" + GATE_SET + """
), w AS (
    SELECT unnest(%(sids)s::text[]) AS subject_id
)
INSERT INTO public.bench_gate_checkpoints
    (workflow_id, subject_id, step, visit, attempt, ok, outcome, started_at, finished_at,
     wave_id, run_id, worker_id)
SELECT %(workflow_id)s, w.subject_id, %(step)s, 0, 1, true, coalesce(g.outcome, 'RUN'),
       %(started)s, clock_timestamp(), %(wave_id)s, 1, 'bench'
  FROM w LEFT JOIN g USING (subject_id)
"""

# The same gate as a one-step workflow for the engine's own figure.
ENGINE_WORKFLOW_SQL = """
INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key)
VALUES (%(wf)s, 'bench gates', 'public.bench_postings', 'posting_id');
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, gate_sql)
VALUES (%(wf)s, 1, 'Has stats?', 'gate', %(gate)s);
INSERT INTO interp.step_transitions VALUES (%(wf)s, 1, 'RUN', NULL), (%(wf)s, 1, 'SKIP', NULL);
INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step)
VALUES (%(wf)s, 'all', 'SELECT posting_id AS subject_id FROM public.bench_postings', 1);
INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step, status)
SELECT %(wf)s, posting_id::text, 'all', 1, 'ready' FROM public.bench_postings;
ANALYZE interp.subject_state;
"""

INSERT_ONE = """
INSERT INTO public.bench_gate_checkpoints
    (workflow_id, subject_id, step, visit, attempt, ok, outcome, started_at, finished_at,
     wave_id, run_id, worker_id)
VALUES (%(workflow_id)s, %(subject_id)s, %(step)s, 0, 1, true, %(outcome)s, %(started)s, now(),
        %(wave_id)s, 1, 'bench')
"""


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE public.bench_gate_checkpoints")
    conn.execute("CHECKPOINT")


def count_outcomes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(conn.execute("SELECT outcome, count(*) FROM public.bench_gate_checkpoints"
                             " GROUP BY 1 ORDER BY 1").fetchall())


def timed_waves(conn: psycopg.Connection[Any], ids: list[int], batch: int,
                run_wave: Callable[[int, list[int]], None]) -> dict[str, Any]:
    """Runs run_wave(wave_number, ids) over the ids in waves, one transaction each."""
    reset(conn)
    t0 = time.perf_counter()
    for w, start in enumerate(range(0, len(ids), batch)):
        with conn.transaction():
            run_wave(w, ids[start:start + batch])
    wall = time.perf_counter() - t0
    return {"subjects": len(ids), "batch_size": batch, "wall_s": round(wall, 3),
            "subjects_per_s": round(len(ids) / wall, 1), "outcomes": count_outcomes(conn)}


def set_based(conn: psycopg.Connection[Any], ids: list[int], batch: int) -> dict[str, Any]:
    def one_statement(w: int, wave: list[int]) -> None:
        conn.execute(GATE_WAVE, {"workflow_id": WORKFLOW_ID, "step": STEP, "wave_id": w,
                                 "started": datetime.now(UTC), "ids": wave,
                                 "sids": [str(i) for i in wave]})

    return timed_waves(conn, ids, batch, one_statement)


def set_based_through_client(conn: psycopg.Connection[Any], ids: list[int],
                             batch: int) -> dict[str, Any]:
    def gate_then_insert(w: int, wave: list[int]) -> None:
        started = datetime.now(UTC)
        outcome = dict(conn.execute(GATE_SET, {"ids": wave}).fetchall())
        sids = [str(i) for i in wave]
        # A subject the gate did not return (no such posting) gets the default, RUN.
        conn.execute(INSERT_MANY, {"workflow_id": WORKFLOW_ID, "step": STEP,
                                   "started": started, "wave_id": w, "ids": sids,
                                   "outcomes": [outcome.get(s, "RUN") for s in sids]})

    return timed_waves(conn, ids, batch, gate_then_insert)


def per_subject(conn: psycopg.Connection[Any], ids: list[int], *,
                commit_each: bool, batch: int) -> dict[str, Any]:
    reset(conn)
    t0 = time.perf_counter()
    if commit_each:
        for i in ids:
            started = datetime.now(UTC)
            with conn.transaction():
                row = conn.execute(GATE_ONE, {"id": i}).fetchone()
                conn.execute(INSERT_ONE, {"workflow_id": WORKFLOW_ID, "subject_id": str(i),
                                          "step": STEP, "outcome": row[1] if row else "RUN",
                                          "started": started, "wave_id": 0})
    else:
        for w, start in enumerate(range(0, len(ids), batch)):
            wave = ids[start:start + batch]
            started = datetime.now(UTC)
            with conn.transaction():
                sids, outcomes = [], []
                for i in wave:
                    row = conn.execute(GATE_ONE, {"id": i}).fetchone()
                    sids.append(str(i))
                    outcomes.append(row[1] if row else "RUN")
                conn.execute(INSERT_MANY, {"workflow_id": WORKFLOW_ID, "step": STEP,
                                           "started": started, "wave_id": w, "ids": sids,
                                           "outcomes": outcomes})
    wall = time.perf_counter() - t0
    return {"subjects": len(ids), "commit": "per subject" if commit_each else f"per {batch}",
            "wall_s": round(wall, 3), "subjects_per_s": round(len(ids) / wall, 1),
            "outcomes": count_outcomes(conn)}


def engine(dsn: str, n: int, batch: int) -> dict[str, Any]:
    """interp's Runner on the one-gate workflow; subjects are admitted beforehand."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        psycopg.ClientCursor(conn).execute(ENGINE_WORKFLOW_SQL,
                                           {"wf": ENGINE_WORKFLOW_ID, "gate": GATE_SET})
        conn.execute("CHECKPOINT")
    db = Database(DatabaseChoice(dsn, "bench"), application_name="interp-bench-gates")
    try:
        runner = Runner(db, ENGINE_WORKFLOW_ID, RunOptions(batch_size=batch, until_idle=True))
        t0 = time.perf_counter()
        summary = runner.run()
        wall = time.perf_counter() - t0
    finally:
        db.close()
    with psycopg.connect(dsn) as conn:
        outcomes = dict(conn.execute(
            "SELECT outcome, count(*) FROM interp.checkpoints WHERE workflow_id = %s "
            "GROUP BY 1 ORDER BY 1", (ENGINE_WORKFLOW_ID,)).fetchall())
        done = conn.execute("SELECT count(*) FROM interp.subject_state WHERE workflow_id = %s "
                            "AND status = 'done'", (ENGINE_WORKFLOW_ID,)).fetchone()
    if summary.checkpoints != n or (done and done[0] != n):
        raise SystemExit(f"engine run incomplete: {summary.checkpoints} checkpoints, "
                         f"{done} done of {n}")
    return {"subjects": n, "batch_size": batch, "wall_s": round(wall, 3),
            "subjects_per_s": round(n / wall, 1), "waves": summary.waves,
            "outcomes": outcomes}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the upper one of two), with every round's rate."""
    ranked = sorted(runs, key=lambda r: r["subjects_per_s"])
    return {**ranked[len(ranked) // 2], "rounds": [r["subjects_per_s"] for r in runs]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN),
                   help="admin DSN of the server to use (env INTERP_BENCH_DSN)")
    p.add_argument("--postings", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=1000, help="subjects per wave")
    p.add_argument("--sample", type=int, default=5000,
                   help="subjects the per-subject way runs over (its rate is extrapolated)")
    p.add_argument("--rounds", type=int, default=3,
                   help="times every way runs; the figures are the medians")
    p.add_argument("--quick", action="store_true", help="20,000 postings, a 1,000 sample")
    p.add_argument("--keep", action="store_true", help="do not drop the scratch database")
    args = p.parse_args(argv)
    if args.quick:
        args.postings = min(args.postings, 20_000)
        args.sample = min(args.sample, 1000)
    args.sample = min(args.sample, args.postings)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin = args.dsn
    dbname = f"interp_bench_gates_{os.getpid()}"
    dsn = with_dbname(admin, dbname)
    admin_exec(admin, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    result: dict[str, Any] = {
        "benchmark": "gates", "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "postings": args.postings}
    try:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            psycopg.ClientCursor(conn).execute(SETUP_SQL, {"n": args.postings})
        with psycopg.connect(dsn) as conn:
            ids = list(range(1, args.postings + 1))
            # Spread the sample over the whole id range, so it meets the same mix.
            step = max(1, args.postings // args.sample)
            sample = ids[::step][:args.sample]

            rounds: dict[str, list[dict[str, Any]]] = {"s": [], "tc": [], "one": [], "mid": []}
            for r in range(1, args.rounds + 1):
                # Each round runs every way back to back, so a change in the machine's
                # load meets all of them; the figures are the medians over rounds.
                log(f"round {r}/{args.rounds}: waves of {args.batch_size}, "
                    f"{len(ids):,} postings set-based, {len(sample):,} sampled per subject")
                rounds["s"].append(set_based(conn, ids, args.batch_size))
                rounds["tc"].append(set_based_through_client(conn, ids, args.batch_size))
                rounds["one"].append(per_subject(conn, sample, commit_each=True,
                                                 batch=args.batch_size))
                rounds["mid"].append(per_subject(conn, sample, commit_each=False,
                                                 batch=args.batch_size))
                log("  set-based {:,.0f}, via client {:,.0f}, per subject {:,.0f}, per subject"
                    " with batched commits {:,.0f} subjects/s".format(
                        *(rounds[k][-1]["subjects_per_s"] for k in ("s", "tc", "one", "mid"))))
            s, tc, one, mid = (median_run(rounds[k]) for k in ("s", "tc", "one", "mid"))
            ratios = sorted(a["subjects_per_s"] / b["subjects_per_s"]
                            for a, b in zip(rounds["s"], rounds["one"], strict=True))
        log(f"the engine (Runner, one-gate workflow): {len(ids):,} subjects ...")
        eng = engine(dsn, args.postings, args.batch_size)
        log(f"  {eng['subjects_per_s']:,.0f} subjects/s ({eng['wall_s']} s)")
        one["extrapolated_wall_s_for_all"] = round(args.postings / one["subjects_per_s"], 1)
        mid["extrapolated_wall_s_for_all"] = round(args.postings / mid["subjects_per_s"], 1)
        result.update({
            "set_based": s, "set_based_through_client": tc, "engine": eng,
            "per_subject": one, "per_subject_batched_commit": mid,
            "ratio_set_over_per_subject": round(s["subjects_per_s"] / one["subjects_per_s"], 1),
            "ratio_through_client_over_per_subject": round(
                tc["subjects_per_s"] / one["subjects_per_s"], 1),
            "ratio_engine_over_per_subject": round(
                eng["subjects_per_s"] / one["subjects_per_s"], 1),
            "ratio_set_over_per_subject_batched_commit": round(
                s["subjects_per_s"] / mid["subjects_per_s"], 1)})
        result["ratio_set_over_per_subject_by_round"] = [round(x, 1) for x in ratios]
        result["target_ratio>=50"] = result["ratio_set_over_per_subject"] >= 50
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if not args.keep:
            admin_exec(admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))
        else:
            log(f"kept database {dbname}")
    print(json.dumps(result, indent=2))
    log(f"\nGates over {args.postings:,} postings ({result['machine']['cpus']} CPUs):\n"
        f"  set-based, wave {args.batch_size}:          {s['subjects_per_s']:>9,.0f} subjects/s"
        f" ({s['wall_s']} s)\n"
        f"  set-based, rows via client:    {tc['subjects_per_s']:>9,.0f} subjects/s"
        f" ({tc['wall_s']} s)\n"
        f"  engine (Runner, gate waves):   {eng['subjects_per_s']:>9,.0f} subjects/s"
        f" ({eng['wall_s']} s; also moves subject_state)\n"
        f"  per subject, commit each:      {one['subjects_per_s']:>9,.0f} subjects/s"
        f" (sample of {one['subjects']:,}; {one['extrapolated_wall_s_for_all']} s for all,"
        f" extrapolated)\n"
        f"  per subject, commit per wave:  {mid['subjects_per_s']:>9,.0f} subjects/s"
        f" (sample of {mid['subjects']:,})\n"
        f"  (medians of {args.rounds} rounds)\n"
        f"  ratio set-based / per subject: {result['ratio_set_over_per_subject']}x"
        f" (target >= 50x); rows via client: {result['ratio_through_client_over_per_subject']}x;"
        f" engine: {result['ratio_engine_over_per_subject']}x;\n"
        f"  ratio by round: {result['ratio_set_over_per_subject_by_round']}\n"
        f"  set-based / per-subject with batched commits:"
        f" {result['ratio_set_over_per_subject_batched_commit']}x\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
