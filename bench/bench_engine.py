"""Engine throughput: N subjects through a 5-step no-op pipeline (1 gate, 2 SQL, 2 script).

In one run, on one PostgreSQL server, it measures:
  * interp (in process, one Runner) at several batch sizes, and two `interp run`
    worker processes sharing the workflow: transitions/s = checkpoints / wall time;
  * the same pipeline through DBOS Transact (each step a @DBOS.step, one
    workflow per subject, enqueued on a DBOS queue) over a smaller sample:
    steps/s, and the ratio interp / DBOS;
  * a batched-COPY baseline (checkpoint-like rows COPYed into a copy of
    interp.checkpoints, one commit per batch of B rows), and a commit-per-row
    INSERT baseline: interp's figure as a fraction of the COPY one.

Everything happens in scratch databases (interp_bench_<pid>, and
interp_bench_<pid>_dbos for DBOS's system database) that are dropped at the end.
One JSON object goes to stdout, a readable summary to stderr.

    .venv/bin/python bench/bench_engine.py            # default: 100,000 subjects (~4 min)
    .venv/bin/python bench/bench_engine.py --quick    # 10,000 subjects (~1 min)
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
# The no-op script actor lives here in bench/, not in the shipped `actors` package;
# the benchmark alone allows it (in-process and in the `interp run` workers it starts).
BENCH_SCRIPT_PREFIXES = "actors,noop_actor"
os.environ["INTERP_SCRIPT_PREFIXES"] = BENCH_SCRIPT_PREFIXES

from _common import admin_exec, log, with_dbname  # noqa: E402

from interpreter.actor_kinds import register  # noqa: E402
from interpreter.cheap_kinds import SCRIPT  # noqa: E402
from interpreter.config import DatabaseChoice  # noqa: E402
from interpreter.db import Database  # noqa: E402
from interpreter.engine import Runner, RunOptions  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKFLOW_ID = 9001
STEPS = 5

# The pipeline, as rows. Each step does something trivial but real.
PIPELINE_SQL = """
CREATE TABLE public.bench_subjects (id bigint PRIMARY KEY, payload text NOT NULL);
INSERT INTO public.bench_subjects
SELECT g, md5(g::text) FROM generate_series(1, %(n)s) AS g;
ANALYZE public.bench_subjects;

INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key)
VALUES (%(wf)s, 'bench: 5-step no-op', 'public.bench_subjects', 'id');

INSERT INTO interp.actors (name, kind, target) VALUES
  ('bench_sql_noop', 'sql', 'SELECT 1 WHERE false'),
  ('bench_script_noop', 'script', 'noop_actor:noop');

INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, gate_sql) VALUES
  (%(wf)s, 1, 'gate: subject exists', 'gate', NULL,
   'SELECT id::text AS subject_id, ''RUN'' AS outcome FROM public.bench_subjects
     WHERE id = ANY(%%(ids)s::bigint[])'),
  (%(wf)s, 2, 'sql no-op 1', 'actor', 'bench_sql_noop', NULL),
  (%(wf)s, 3, 'script no-op 1', 'actor', 'bench_script_noop', NULL),
  (%(wf)s, 4, 'sql no-op 2', 'actor', 'bench_sql_noop', NULL),
  (%(wf)s, 5, 'script no-op 2', 'actor', 'bench_script_noop', NULL);

INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES
  (%(wf)s, 1, 'RUN', 2), (%(wf)s, 1, 'SKIP', NULL), (%(wf)s, 2, 'DONE', 3),
  (%(wf)s, 3, 'DONE', 4), (%(wf)s, 4, 'DONE', 5), (%(wf)s, 5, 'DONE', NULL);

INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step)
VALUES (%(wf)s, 'all', 'SELECT id AS subject_id FROM public.bench_subjects', 1);
"""

RESET_SQL = ("TRUNCATE interp.checkpoints, interp.subject_state, interp.waves, interp.runs"
             " CASCADE")

CHECKPOINT_COLUMNS = ("workflow_id", "subject_id", "step", "visit", "attempt", "ok", "outcome",
                      "output", "error", "started_at", "finished_at", "wave_id", "run_id",
                      "worker_id")





def server_facts(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN ('synchronous_commit',"
            " 'fsync', 'shared_buffers', 'wal_level', 'max_wal_size', 'server_version')"
        ).fetchall()
    return {name: f"{setting}{' x ' + unit if unit else ''}" for name, setting, unit in rows}


# ---------------------------------------------------------------- interp

class PhaseTimer:
    """Wraps a few public methods of a Runner's rooms (on the instances, not the
    classes) to time each phase. lifecycle.paused includes the breaker refresh and
    the reap, which are also timed on their own."""

    PHASES = (("store", "admit"), ("lifecycle", "paused"), ("store", "reap_expired_leases"),
              ("breaker", "refresh"), ("store", "ready_steps"), ("store", "anything_pending"),
              ("store", "run_inline"), ("store", "claim"), ("store", "commit"))

    def __init__(self, runner: Runner):
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        for room_name, method in self.PHASES:
            room = getattr(runner, room_name)
            setattr(room, method, self._wrap(f"{room_name}.{method}", getattr(room, method)))
        # The script kind's call, timed through the registry of actor kinds (the
        # built-in kind is wrapped afresh for each timer, never a wrapper twice).
        register(replace(SCRIPT, run_wave=self._wrap("script_actor_call", SCRIPT.run_wave)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed

    def report(self) -> dict[str, dict[str, float]]:
        return {k.lstrip("_"): {"s": round(v, 3), "calls": self.calls[k],
                                "ms_per_call": round(1000 * v / max(1, self.calls[k]), 3)}
                for k, v in sorted(self.total.items(), key=lambda kv: -kv[1])}


def check_finished(dsn: str, n: int, *, capped: bool = False) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        cps, ok, dupes = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE ok),"
            " count(*) - count(DISTINCT (subject_id, step, visit)) FILTER (WHERE ok)"
            " FROM interp.checkpoints WHERE workflow_id = %s", (WORKFLOW_ID,)).fetchone()
        done = conn.execute("SELECT count(*) FROM interp.subject_state"
                            " WHERE workflow_id = %s AND status = 'done'",
                            (WORKFLOW_ID,)).fetchone()[0]
    facts = {"checkpoints": cps, "ok": ok, "duplicate_successes": dupes, "done": done}
    if dupes or (not capped and (done != n or cps != n * STEPS)):
        raise SystemExit(f"interp run did not finish cleanly: {facts} (expected {n} done, "
                         f"{n * STEPS} checkpoints)")
    return facts


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RESET_SQL)
        conn.execute("CHECKPOINT")


def run_interp_inprocess(dsn: str, n: int, batch: int, max_run_s: float) -> dict[str, Any]:
    """One Runner, stopped (as SIGTERM would) if it runs past max_run_s: then the figure
    is the rate over what it committed so far."""
    reset(dsn)
    db = Database(DatabaseChoice(dsn, "bench"), application_name="interp-bench")
    stop = threading.Event()
    timer = threading.Timer(max_run_s, stop.set)
    try:
        runner = Runner(db, WORKFLOW_ID, RunOptions(batch_size=batch, until_idle=True),
                        stop=stop)
        phases = PhaseTimer(runner)
        timer.start()
        t0 = time.perf_counter()
        summary = runner.run()
        wall = time.perf_counter() - t0
    finally:
        timer.cancel()
        db.close()
    capped = summary.status == "stopped"
    facts = check_finished(dsn, n, capped=capped)
    return {"mode": "in-process Runner", "workers": 1, "batch_size": batch, "subjects": n,
            "capped_at_s": max_run_s if capped else None,
            "transitions": summary.checkpoints, "waves": summary.waves,
            "by_step": {str(k): v for k, v in sorted(summary.by_step.items())},
            "wall_s": round(wall, 3),
            "transitions_per_s": round(summary.checkpoints / wall, 1),
            "checked": facts, "phases": phases.report()}


def interp_command() -> list[str]:
    exe = Path(sys.executable).with_name("interp")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("interp")
    return [found] if found else [sys.executable, "-m", "interpreter"]


def run_interp_workers(dsn: str, n: int, batch: int, workers: int,
                       max_run_s: float) -> dict[str, Any]:
    reset(dsn)
    cmd = interp_command() + ["--dsn", dsn, "run", "--workflow", str(WORKFLOW_ID),
                              "--until-idle", "--batch-size", str(batch), "--json"]
    t0 = time.perf_counter()
    env = {**os.environ, "INTERP_SCRIPT_PREFIXES": BENCH_SCRIPT_PREFIXES,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen(cmd + ["--worker-id", f"bench-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for i in range(workers)]
    # Past max_run_s, SIGTERM: each worker finishes its wave and exits 0 with its summary.
    fired = threading.Event()

    def cap() -> None:
        fired.set()
        for p in procs:
            if p.poll() is None:
                p.terminate()

    timer = threading.Timer(max_run_s, cap)
    timer.start()
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    timer.cancel()
    capped = fired.is_set()
    per_worker = []
    for p, (out, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` exited {p.returncode}: {err.strip()[-2000:]}")
        per_worker.append(json.loads(out))
    facts = check_finished(dsn, n, capped=capped)
    with psycopg.connect(dsn) as conn:
        span = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(started_at))"
                            " FROM interp.runs").fetchone()[0]
    total = sum(w["checkpoints"] for w in per_worker)
    return {"mode": "`interp run` processes", "workers": workers, "batch_size": batch,
            "subjects": n, "capped_at_s": max_run_s if capped else None, "transitions": total,
            "wall_s": round(wall, 3),
            "transitions_per_s": round(total / wall, 1),
            "runs_span_s": round(float(span), 3),
            "transitions_per_s_runs_span": round(total / float(span), 1),
            "per_worker_checkpoints": [w["checkpoints"] for w in per_worker],
            "checked": facts}


# ---------------------------------------------------------------- DBOS

def run_dbos(admin_dsn: str, app_dsn: str, sys_dbname: str, n: int,
             concurrency: int) -> dict[str, Any]:
    from dbos import DBOS, DBOSConfig
    from psycopg_pool import ConnectionPool

    for name in ("dbos", "dbos._logger"):
        logging.getLogger(name).setLevel(logging.WARNING)
    admin_exec(admin_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(sys_dbname)))
    sys_url = with_dbname(admin_dsn, sys_dbname)
    if not sys_url.startswith("postgresql://"):
        p = conninfo_to_dict(sys_url)
        sys_url = (f"postgresql://{p.get('user', 'postgres')}@{p.get('host', '127.0.0.1')}:"
                   f"{p.get('port', '5432')}/{sys_dbname}")
    # The app database's no-op statements run on a pool as large as the queue's concurrency.
    pool = ConnectionPool(app_dsn, min_size=concurrency, max_size=concurrency, open=True)
    config: DBOSConfig = {"name": "interp-bench", "system_database_url": sys_url,
                          "log_level": "WARNING", "sys_db_pool_size": concurrency + 8}
    DBOS(config=config)

    @DBOS.step()
    def gate(subject_id: int) -> str:
        with pool.connection() as conn:
            row = conn.execute("SELECT 'RUN' FROM public.bench_subjects WHERE id = %s",
                               (subject_id,)).fetchone()
        return row[0] if row else "SKIP"

    @DBOS.step()
    def sql_noop(subject_id: int) -> None:  # noqa: ARG001
        with pool.connection() as conn:
            conn.execute("SELECT 1 WHERE false").fetchall()

    @DBOS.step()
    def script_noop(subject_id: int) -> None:  # noqa: ARG001
        return None

    @DBOS.workflow()
    def pipeline(subject_id: int) -> str:
        if gate(subject_id) != "RUN":
            return "SKIP"
        sql_noop(subject_id)
        script_noop(subject_id)
        sql_noop(subject_id)
        script_noop(subject_id)
        return "DONE"

    try:
        DBOS.launch()
        queue = DBOS.register_queue("bench", worker_concurrency=concurrency,
                                    polling_interval_sec=0.05)
        t0 = time.perf_counter()
        handles = [queue.enqueue(pipeline, i) for i in range(1, n + 1)]
        enqueued = time.perf_counter() - t0
        results = [h.get_result() for h in handles]
        wall = time.perf_counter() - t0
    finally:
        DBOS.destroy(destroy_registry=True)
        pool.close()
        admin_exec(admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(sys_dbname)))
    if results.count("DONE") != n:
        raise SystemExit(f"DBOS: only {results.count('DONE')} of {n} workflows returned DONE")
    steps = n * STEPS
    return {"mode": "DBOS Transact queue", "dbos_version": _version("dbos"),
            "workflows": n, "steps": steps, "worker_concurrency": concurrency,
            "enqueue_s": round(enqueued, 3), "wall_s": round(wall, 3),
            "steps_per_s": round(steps / wall, 1)}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------- baselines

def copy_baseline(dsn: str, rows: int, batch: int) -> dict[str, Any]:
    """COPY checkpoint-like rows into a copy of interp.checkpoints (same columns and
    indexes), one transaction per batch of `batch` rows."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_copy")
        conn.execute("CREATE TABLE public.bench_copy (LIKE interp.checkpoints"
                     " INCLUDING DEFAULTS INCLUDING INDEXES)")
        conn.execute("CHECKPOINT")
        copy_sql = sql.SQL("COPY public.bench_copy ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, CHECKPOINT_COLUMNS)))
        t0 = time.perf_counter()
        done = 0
        while done < rows:
            k = min(batch, rows - done)
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as cp:
                step = 1 + (done // max(1, rows // STEPS)) % STEPS
                for i in range(done, done + k):
                    cp.write_row((WORKFLOW_ID, str(i), step, 0, 1, True, "DONE", None, None,
                                  now, now, 1, 1, "bench"))
            done += k
        wall = time.perf_counter() - t0
        conn.execute("DROP TABLE public.bench_copy")
    return {"batch_size": batch, "rows": rows, "wall_s": round(wall, 3),
            "rows_per_s": round(rows / wall, 1)}


def commit_per_row_baseline(dsn: str, rows: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_copy")
        conn.execute("CREATE TABLE public.bench_copy (LIKE interp.checkpoints"
                     " INCLUDING DEFAULTS INCLUDING INDEXES)")
        insert = sql.SQL("INSERT INTO public.bench_copy ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, CHECKPOINT_COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(CHECKPOINT_COLUMNS)))
        t0 = time.perf_counter()
        for i in range(rows):
            conn.execute(insert, (WORKFLOW_ID, str(i), 1, 0, 1, True, "DONE", None, None,
                                  now, now, 1, 1, "bench"))
        wall = time.perf_counter() - t0
        conn.execute("DROP TABLE public.bench_copy")
    return {"rows": rows, "wall_s": round(wall, 3), "rows_per_s": round(rows / wall, 1)}


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN),
                   help="admin DSN of the server to use (env INTERP_BENCH_DSN)")
    p.add_argument("--subjects", type=int, default=100_000)
    p.add_argument("--batch-sizes", default="100,500,1000,5000",
                   help="comma-separated batch sizes for the in-process sweep")
    p.add_argument("--max-run-s", type=float, default=45.0,
                   help="stop each interp run after this long and report the rate over what"
                        " it committed (keeps the default run near 5 minutes)")
    p.add_argument("--workers", type=int, default=2,
                   help="`interp run` processes for the multi-worker run (0: skip)")
    p.add_argument("--workers-batch-size", type=int, default=1000)
    p.add_argument("--dbos-subjects", type=int, default=2000)
    p.add_argument("--dbos-concurrency", type=int, default=16)
    p.add_argument("--no-dbos", action="store_true")
    p.add_argument("--copy-rows", type=int, default=100_000)
    p.add_argument("--commit-rows", type=int, default=2000)
    p.add_argument("--quick", action="store_true",
                   help="10,000 subjects, 500 DBOS workflows, batch sizes 500,1000")
    p.add_argument("--rollups", choices=("on", "off"), default="on",
                   help="diagnostic: 'off' disables the ops rollup triggers of schema/0002 on"
                        " interp.checkpoints and interp.subject_state in the scratch database,"
                        " to isolate the engine's own cost")
    p.add_argument("--scripts", choices=("leased", "inline"), default="leased",
                   help="'leased' (the default for script actors: claim with a lease, no "
                        "connection held while the script runs) or 'inline' (params.inline: "
                        "the quick script runs inside the wave's transaction, like SQL)")
    p.add_argument("--keep", action="store_true", help="do not drop the scratch database")
    args = p.parse_args(argv)
    if args.quick:
        args.subjects = min(args.subjects, 10_000)
        args.dbos_subjects = min(args.dbos_subjects, 500)
        args.batch_sizes = "500,1000"
        args.copy_rows = min(args.copy_rows, 20_000)
        args.commit_rows = min(args.commit_rows, 500)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    admin = args.dsn
    dbname = f"interp_bench_{os.getpid()}"
    dsn = with_dbname(admin, dbname)
    admin_exec(admin, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    result: dict[str, Any] = {
        "benchmark": "engine", "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "subjects": args.subjects, "steps": STEPS}
    try:
        migrate(dsn)
        result["server"] = server_facts(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Several statements in one go: bind on the client (the values are ours).
            psycopg.ClientCursor(conn).execute(PIPELINE_SQL, {"n": args.subjects,
                                                              "wf": WORKFLOW_ID})
            if args.scripts == "inline":
                conn.execute("UPDATE interp.actors SET params = '{\"inline\": true}' "
                             "WHERE name = 'bench_script_noop'")
            if args.rollups == "off":
                for table in ("interp.checkpoints", "interp.subject_state"):
                    conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        result["rollup_triggers"] = args.rollups
        result["script_actors"] = args.scripts

        runs = []
        for b in args.batch_sizes:
            log(f"interp: {args.subjects} subjects x {STEPS} steps, batch {b}, 1 worker ...")
            r = run_interp_inprocess(dsn, args.subjects, b, args.max_run_s)
            log(f"  {r['transitions_per_s']:,.0f} transitions/s ({r['transitions']:,} in"
                f" {r['wall_s']} s{', capped' if r['capped_at_s'] else ''})")
            runs.append(r)
        if args.workers > 1:
            log(f"interp: {args.workers} `interp run` workers, batch "
                f"{args.workers_batch_size} ...")
            r = run_interp_workers(dsn, args.subjects, args.workers_batch_size, args.workers,
                                   args.max_run_s)
            log(f"  {r['transitions_per_s']:,.0f} transitions/s ({r['transitions']:,} in"
                f" {r['wall_s']} s{', capped' if r['capped_at_s'] else ''})")
            runs.append(r)
        result["interp"] = runs
        best = max(runs, key=lambda r: r["transitions_per_s"])
        result["interp_best"] = {k: best[k] for k in ("mode", "workers", "batch_size",
                                                       "transitions_per_s")}

        copies = []
        for b in sorted(set(args.batch_sizes) | {best["batch_size"]}):
            log(f"baseline: COPY {args.copy_rows} checkpoint rows in batches of {b} ...")
            c = copy_baseline(dsn, args.copy_rows, b)
            log(f"  {c['rows_per_s']:,.0f} rows/s")
            copies.append(c)
        result["copy_baseline"] = copies
        log(f"baseline: {args.commit_rows} INSERTs, one commit each ...")
        result["commit_per_row_baseline"] = commit_per_row_baseline(dsn, args.commit_rows)

        copy_by_b = {c["batch_size"]: c["rows_per_s"] for c in copies}
        for r in runs:
            r["fraction_of_copy_same_batch"] = round(
                r["transitions_per_s"] / copy_by_b[r["batch_size"]], 3)

        if not args.no_dbos:
            log(f"DBOS: {args.dbos_subjects} workflows x {STEPS} steps, queue concurrency "
                f"{args.dbos_concurrency} ...")
            d = run_dbos(admin, dsn, f"{dbname}_dbos", args.dbos_subjects,
                         args.dbos_concurrency)
            log(f"  {d['steps_per_s']:,.0f} steps/s ({d['wall_s']} s)")
            result["dbos"] = d
            result["ratio_interp_best_over_dbos"] = round(
                best["transitions_per_s"] / d["steps_per_s"], 1)
        result["fraction_of_copy_best"] = round(
            best["transitions_per_s"] / copy_by_b[best["batch_size"]], 3)
        result["targets"] = {
            "transitions_per_s>=20000": best["transitions_per_s"] >= 20_000,
            "ratio_over_dbos>=100": (result.get("ratio_interp_best_over_dbos", 0) >= 100
                                     if "dbos" in result else None)}
    finally:
        if not args.keep:
            admin_exec(admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))
        else:
            log(f"kept database {dbname}")

    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    summarize(result)
    return 0


def summarize(r: dict[str, Any]) -> None:
    out = io.StringIO()
    out.write(f"\nEngine throughput: {r['subjects']:,} subjects x {r['steps']} no-op steps "
              f"(1 gate, 2 SQL, 2 script), {r['machine']['cpus']} CPUs, rollup triggers "
              f"{r['rollup_triggers']}, load average {r['load_average_at_start'][0]} -> "
              f"{r['load_average_at_end'][0]}\n")
    for run in r["interp"]:
        out.write(f"  interp {run['mode']:<24} workers={run['workers']} "
                  f"batch={run['batch_size']:<5} {run['transitions_per_s']:>9,.0f} transitions/s"
                  f"  ({run['transitions']:,} in {run['wall_s']:.1f} s"
                  f"{', capped' if run['capped_at_s'] else ''};"
                  f" {run['fraction_of_copy_same_batch']:.0%} of COPY at that batch)\n")
    for c in r["copy_baseline"]:
        out.write(f"  COPY baseline batch={c['batch_size']:<5} {c['rows_per_s']:>9,.0f} rows/s\n")
    cpr = r["commit_per_row_baseline"]
    out.write(f"  INSERT + commit per row        {cpr['rows_per_s']:>9,.0f} rows/s\n")
    if "dbos" in r:
        d = r["dbos"]
        out.write(f"  DBOS {d['dbos_version']} queue (concurrency {d['worker_concurrency']}, "
                  f"{d['workflows']:,} workflows) {d['steps_per_s']:,.0f} steps/s\n")
        out.write(f"  ratio interp/DBOS: {r['ratio_interp_best_over_dbos']}x\n")
    b = r["interp_best"]
    out.write(f"  best interp: {b['transitions_per_s']:,.0f} transitions/s "
              f"({b['mode']}, batch {b['batch_size']}) = {r['fraction_of_copy_best']:.0%} of "
              f"batched COPY; targets {r['targets']}\n")
    log(out.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
