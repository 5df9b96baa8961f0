"""Admission latency under a backlog: how long a row inserted while polling
workers are busy waits before it is admitted, and before it is first claimed.

Two real `interp run` processes (polling: no --until-idle) work through a
backlog of `--backlog` subjects of one slow script step (bench/slow_actor.py
sleeps `--seconds` per subject, so the backlog lasts at least
backlog x seconds / workers, whatever the load). `--insert-after` seconds into
it, `--new` rows are inserted in one statement: half with priority 10 (an
urgent supplier tier), half with priority 0, like the backlog. For each new row
the benchmark reports, from its INSERT (clock_timestamp() on the server):

- to admitted: interp.subject_state.admitted_at;
- to first claim: the claimed_at of the wave of its first checkpoint;

and how much of the backlog was still waiting when the new rows were admitted.
Then it stops the workers (SIGTERM). `--root` runs another checkout's code in
the workers (the baseline: `--root /path/to/main`), migrated by that code.

One JSON object goes to stdout, a summary to stderr, with the load average at
start and end (the machine may be shared: the figure moves with its load).

    .venv/bin/python bench/bench_admission.py
    .venv/bin/python bench/bench_admission.py --root /work/main     # before the change
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
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import admin_exec, log, with_dbname  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WF = 9501
NEW_BASE = 1_000_000


def env_for(root: Path, dsn: str) -> dict[str, str]:
    return {**os.environ, "INTERP_DSN": dsn, "INTERP_SCRIPT_PREFIXES": "slow_actor",
            "PYTHONPATH": os.pathsep.join([str(root), str(BENCH)]),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}


def setup(dsn: str, backlog: int, seconds: float) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.products (id bigint PRIMARY KEY, tier int NOT NULL "
                  "DEFAULT 0, inserted_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        c.execute("INSERT INTO public.products (id) SELECT generate_series(1, %s)", (backlog,))
        c.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                  "('bench_slow', 'script', 'slow_actor:sleepy', %s)",
                  (json.dumps({"seconds": seconds}),))
        c.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                  "VALUES (%s, 'admission bench', 'public.products', 'id')", (WF,))
        c.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, "
                  "timeout_s) VALUES (%s, 1, 'enrich', 'actor', 'bench_slow', 600)", (WF,))
        c.execute("INSERT INTO interp.step_transitions VALUES (%s, 1, '*', NULL)", (WF,))
        c.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                  "VALUES (%s, 'products', 'SELECT id AS subject_id, tier AS priority "
                  "FROM public.products', 1)", (WF,))


def scalar(dsn: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(query, params).fetchone()
        return row[0] if row else None


def measure(dsn: str, new: int) -> list[dict[str, Any]]:
    """Per new row: seconds from INSERT to admitted and to its first claim."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        return c.execute("""
            SELECT p.id, p.tier,
                   extract(epoch FROM s.admitted_at - p.inserted_at) AS to_admitted_s,
                   extract(epoch FROM (SELECT min(w.claimed_at) FROM interp.checkpoints k
                                         JOIN interp.waves w ON w.wave_id = k.wave_id
                                        WHERE k.workflow_id = %(wf)s
                                          AND k.subject_id = p.id::text) - p.inserted_at)
                       AS to_claimed_s
              FROM public.products p
              LEFT JOIN interp.subject_state s
                ON s.workflow_id = %(wf)s AND s.subject_id = p.id::text
             WHERE p.id > %(base)s ORDER BY p.id""", {"wf": WF, "base": NEW_BASE}).fetchall()


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN))
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the checkout whose code the workers run (default: this one)")
    ap.add_argument("--backlog", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=0.05, help="actor time per subject")
    ap.add_argument("--new", type=int, default=40, help="rows inserted mid-run")
    ap.add_argument("--insert-after", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--max-run-s", type=float, default=300.0)
    args = ap.parse_args()
    root = args.root.resolve()
    load_start = os.getloadavg()
    name = f"interp_bench_admission_{os.getpid()}"
    admin_exec(args.dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(args.dsn, name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = env_for(root, dsn)
        subprocess.run([sys.executable, "-m", "interpreter", "db", "migrate"], env=env,
                       cwd=root, check=True, stdout=subprocess.DEVNULL)
        setup(dsn, args.backlog, args.seconds)
        logs = Path(tempfile.mkdtemp(prefix="bench_admission_"))
        for i in range(args.workers):
            with open(logs / f"worker{i}.log", "w") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "interpreter", "run", "--workflow", str(WF),
                     "--poll", str(args.poll), "--batch-size", str(args.batch_size),
                     "--quiet", "--worker-id", f"bench-{i}"],
                    env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err))
        started = time.monotonic()
        while not scalar(dsn, "SELECT count(*) FROM interp.checkpoints WHERE workflow_id = %s",
                         (WF,)):
            if time.monotonic() - started > 60 or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the workers did not start (see {logs})")
            time.sleep(0.05)
        time.sleep(args.insert_after)
        urgent = args.new // 2
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("INSERT INTO public.products (id, tier) SELECT %s + g, "
                      "CASE WHEN g <= %s THEN 10 ELSE 0 END FROM generate_series(1, %s) g",
                      (NEW_BASE, urgent, args.new))
        deadline = time.monotonic() + args.max_run_s
        ended = ("SELECT count(*) FROM interp.subject_state WHERE workflow_id = %s "
                 "AND status = 'done' AND subject_id::bigint > %s")
        while scalar(dsn, ended, (WF, NEW_BASE)) < args.new:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the new rows were not done in {args.max_run_s} s")
            time.sleep(0.1)
        waiting = scalar(dsn, """
            SELECT count(*) FROM interp.subject_state o
             WHERE o.workflow_id = %s AND o.subject_id::bigint <= %s
               AND NOT EXISTS (SELECT 1 FROM interp.checkpoints k
                                WHERE k.workflow_id = o.workflow_id
                                  AND k.subject_id = o.subject_id
                                  AND k.started_at <= (SELECT min(admitted_at)
                                     FROM interp.subject_state n
                                    WHERE n.workflow_id = o.workflow_id
                                      AND n.subject_id::bigint > %s))""",
                         (WF, NEW_BASE, NEW_BASE))
        rows = measure(dsn, args.new)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        admin_exec(args.dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                   .format(sql.Identifier(name)))
    by_tier: dict[str, Any] = {}
    for tier, label in ((10, "priority_10"), (0, "priority_0")):
        mine = [r for r in rows if r["tier"] == tier]
        by_tier[label] = {
            "rows": len(mine),
            "insert_to_admitted_s": summary([float(r["to_admitted_s"]) for r in mine]),
            "insert_to_first_claim_s": summary([float(r["to_claimed_s"]) for r in mine]),
        }
    result = {"bench": "admission", "root": str(root), "workers": args.workers,
              "backlog": args.backlog, "seconds_per_subject": args.seconds,
              "backlog_min_s": round(args.backlog * args.seconds / args.workers, 1),
              "new": args.new, "insert_after_s": args.insert_after, "poll_s": args.poll,
              "batch_size": args.batch_size, "backlog_waiting_at_admission": waiting,
              **by_tier, "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    for label in ("priority_10", "priority_0"):
        t = by_tier[label]
        log(f"{label}: INSERT -> admitted median {t['insert_to_admitted_s']['median']} s "
            f"(max {t['insert_to_admitted_s']['max']}), -> first claim median "
            f"{t['insert_to_first_claim_s']['median']} s (max "
            f"{t['insert_to_first_claim_s']['max']})")
    log(f"backlog still waiting when the new rows were admitted: {waiting} of {args.backlog}; "
        f"load {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
