"""The monitor: what `interp status`, `interp trace` and the dashboard show.

One dict (:func:`status_data`) drives the text table, ``--json`` and the
dashboard's API, so the three never disagree. The per-step figures come from
the SQL function ``interp.step_status`` (schema/0002_ops_views.sql), which
reads small trigger-maintained rollups instead of the raw checkpoints; the
definitions of done, velocity, ETA and stall live there and in docs/ops.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from tabulate import tabulate

from .db import one
from .errors import InterpError, NotFound

BAR_WIDTH = 20


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, dt.datetime):
            v = v.isoformat()
        elif isinstance(v, dt.timedelta):
            v = v.total_seconds()
        elif hasattr(v, "as_integer_ratio") and not isinstance(v, int | float):  # Decimal
            v = float(v)
        out[k] = v
    return out


def workflow_row(conn: psycopg.Connection[Any], workflow_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT workflow_id, name, paused, version, subject_table, subject_key "
        "FROM interp.workflows WHERE workflow_id = %s", (workflow_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow {workflow_id} (see: interp workflow list)")
    return row


def list_workflows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute("""
        SELECT w.workflow_id, w.name, w.paused, w.version,
               (SELECT count(*) FROM interp.steps s WHERE s.workflow_id = w.workflow_id) AS steps,
               coalesce((SELECT sum(c.n) FROM interp.subject_counts c
                          WHERE c.workflow_id = w.workflow_id), 0)::bigint AS subjects
          FROM interp.workflows w ORDER BY w.workflow_id""").fetchall()
    return [_clean(r) for r in rows]


def status_data(conn: psycopg.Connection[Any], workflow_id: int, stall_window_s: float = 600,
                velocity_window_s: float = 300) -> dict[str, Any]:
    """Everything the monitor shows for one workflow, JSON-ready."""
    if stall_window_s <= 0 or velocity_window_s <= 0:
        raise InterpError("the stall and velocity windows must be positive")
    wf = workflow_row(conn, workflow_id)
    now = one(conn.execute("SELECT now() AS now"))["now"]
    steps = [_clean(r) for r in conn.execute(
        "SELECT * FROM interp.step_status(%s, make_interval(secs => %s), "
        "make_interval(secs => %s))", (workflow_id, stall_window_s, velocity_window_s))]
    for s in steps:
        s.pop("workflow_id", None)

    counts = one(conn.execute("""
        SELECT coalesce(sum(n), 0)::bigint AS subjects,
               coalesce(sum(n) FILTER (WHERE status = 'done'), 0)::bigint AS done,
               coalesce(sum(n) FILTER (WHERE status = 'ready'), 0)::bigint AS waiting,
               coalesce(sum(n) FILTER (WHERE status = 'leased'), 0)::bigint AS leased,
               coalesce(sum(n) FILTER (WHERE status = 'dead'), 0)::bigint AS dead
          FROM interp.subject_counts WHERE workflow_id = %s""", (workflow_id,)))
    checkpoints = one(conn.execute(
        "SELECT coalesce(sum(n), 0)::bigint AS n, "
        "coalesce(sum(n) FILTER (WHERE NOT ok), 0)::bigint AS errors "
        "FROM interp.checkpoint_totals WHERE workflow_id = %s", (workflow_id,)))

    # Completion rate: ok checkpoints in the window whose (step, outcome)
    # leads to the end (an explicit NULL transition, the '*' fallback to NULL,
    # or no transition at all).
    finishing = one(conn.execute("""
        WITH since AS (
            SELECT greatest(date_trunc('minute', now() - make_interval(secs => %(v)s)),
                            (SELECT min(first_at) FROM interp.checkpoint_totals
                              WHERE workflow_id = %(wf)s)) AS t0
        ), recent AS (
            SELECT m.step, m.outcome, sum(m.n) AS n
              FROM interp.checkpoint_minutes m, since
             WHERE m.workflow_id = %(wf)s AND m.ok AND m.minute >= date_trunc('minute', since.t0)
             GROUP BY 1, 2
        )
        SELECT coalesce(sum(r.n) FILTER (WHERE
                   CASE WHEN t.from_step IS NOT NULL THEN t.to_step IS NULL
                        WHEN a.from_step IS NOT NULL THEN a.to_step IS NULL
                        ELSE true END), 0) * 60.0
               / greatest(60.0, extract(epoch FROM now() - (SELECT t0 FROM since))) AS rate
          FROM recent r
          LEFT JOIN interp.step_transitions t ON t.workflow_id = %(wf)s
               AND t.from_step = r.step AND t.outcome = r.outcome
          LEFT JOIN interp.step_transitions a ON a.workflow_id = %(wf)s
               AND a.from_step = r.step AND a.outcome = '*'
        """, {"wf": workflow_id, "v": velocity_window_s}))
    rate = float(finishing["rate"] or 0)
    active = counts["waiting"] + counts["leased"]
    eta: float | None
    if active == 0:
        eta = 0.0
    elif rate > 0:
        eta = round(active * 60.0 / rate)
    else:
        pending_etas = [s["eta_s"] for s in steps if s["waiting"] + s["leased"] > 0]
        eta = max(pending_etas) if pending_etas and None not in pending_etas else None

    breakers = [_clean(r) for r in conn.execute("""
        SELECT h.actor, h.state, h.consecutive_failures, h.opened_at, h.last_error
          FROM interp.actor_health h
         WHERE h.actor IN (SELECT actor FROM interp.steps WHERE workflow_id = %s)
         ORDER BY h.actor""", (workflow_id,))]

    runs = [_clean(r) for r in conn.execute("""
        SELECT run_id, worker_id, host, pid, status, started_at, heartbeat_at, finished_at,
               extract(epoch FROM now() - heartbeat_at) AS heartbeat_age_s
          FROM interp.runs WHERE workflow_id = %s
         ORDER BY (status = 'running') DESC, run_id DESC LIMIT 10""", (workflow_id,))]
    running = [r["run_id"] for r in runs if r["status"] == "running"]
    lane_runs = running or [r["run_id"] for r in runs[:1]]
    lanes = [_clean(r) for r in conn.execute("""
        SELECT run_id, worker_id, status, loaded_model, wall_ms, busy_ms, model_waves,
               duty_cycle, switches, loads, load_ms
          FROM interp.model_lane WHERE run_id = ANY(%s) ORDER BY run_id DESC""", (lane_runs,))]
    for lane in lanes:
        for key in ("wall_ms", "busy_ms", "load_ms"):
            lane[key] = round(float(lane[key] or 0), 1)
        lane["duty_cycle"] = (round(float(lane["duty_cycle"]), 4)
                              if lane["duty_cycle"] is not None else None)
    events = [_clean(r) for r in conn.execute("""
        SELECT e.event_id, e.run_id, e.event, e.from_model, e.model, e.duration_ms, e.at
          FROM interp.model_events e
         WHERE e.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %s)
         ORDER BY e.at DESC, e.event_id DESC LIMIT 20""", (workflow_id,))]
    lane_summary = {
        "loaded_model": next((ln["loaded_model"] for ln in lanes
                              if ln["status"] == "running" and ln["loaded_model"]), None),
        "duty_cycle": lanes[0]["duty_cycle"] if lanes else None,
        "switches": sum(int(ln["switches"]) for ln in lanes),
        "lanes": lanes,
        "events": events,
    }

    stalled = [s["step"] for s in steps if s["stalled"]]
    open_breakers = [b["actor"] for b in breakers if b["state"] == "open"]
    alerts = []
    for s in steps:
        if s["stalled"]:
            alerts.append(f"step {s['step']} ({s['name']}) stalled: {s['waiting']} waiting, "
                          f"{s['leased']} leased, no checkpoint for {stall_window_s:g}s")
    # An open breaker is an alert only while subjects wait behind it: one that tripped
    # on the last subjects of its steps, with none left waiting, holds nothing up.
    held_up = {s["actor"] for s in steps if s["waiting"] + s["leased"] > 0}
    for actor in open_breakers:
        if actor in held_up:
            alerts.append(f"breaker open for actor {actor}")
    if counts["dead"]:
        alerts.append(f"{counts['dead']} dead letter(s)")

    return {
        "workflow": {"id": wf["workflow_id"], "name": wf["name"], "paused": wf["paused"],
                     "version": wf["version"]},
        "generated_at": _iso(now),
        "stall_window_s": stall_window_s,
        "velocity_window_s": velocity_window_s,
        "steps": steps,
        "totals": {
            **counts,
            "active": active,
            "checkpoints": checkpoints["n"],
            "errors": checkpoints["errors"],
            "completion_per_min": round(rate, 2),
            "eta_s": eta,
        },
        "stalled_steps": stalled,
        "breakers": breakers,
        "open_breakers": open_breakers,
        "dead_letters": counts["dead"],
        "model_lane": lane_summary,
        "runs": runs,
        "alerts": alerts,
        "healthy": not alerts,
    }


def velocity_series(conn: psycopg.Connection[Any], workflow_id: int,
                    minutes: int = 60) -> dict[str, Any]:
    """Ok checkpoints per minute per step over the last `minutes`, zero-filled."""
    workflow_row(conn, workflow_id)
    minutes = max(1, min(int(minutes), 24 * 60))
    axis = [r["minute"] for r in conn.execute(
        "SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => %s - 1), "
        "date_trunc('minute', now()), interval '1 minute') AS minute", (minutes,))]
    rows = conn.execute("""
        SELECT step, minute, sum(n)::bigint AS n FROM interp.checkpoint_minutes
         WHERE workflow_id = %s AND ok AND minute >= %s GROUP BY 1, 2""",
                        (workflow_id, axis[0])).fetchall()
    names = {r["execution_order"]: r["name"] for r in conn.execute(
        "SELECT execution_order, name FROM interp.steps WHERE workflow_id = %s "
        "ORDER BY execution_order", (workflow_id,))}
    index = {m: i for i, m in enumerate(axis)}
    series = {step: [0] * len(axis) for step in names}
    for r in rows:
        if r["step"] in series and r["minute"] in index:
            series[r["step"]][index[r["minute"]]] = r["n"]
    return {"workflow": workflow_id, "minutes": [m.isoformat() for m in axis],
            "steps": [{"step": s, "name": names[s], "counts": series[s]} for s in names]}


def trace_data(conn: psycopg.Connection[Any], workflow_id: int, subject_id: str) -> dict[str, Any]:
    """Every checkpoint of one subject, in order, and where it stands now."""
    workflow_row(conn, workflow_id)
    state = conn.execute("""
        SELECT s.subject_id, s.entry_point, s.step, st.name AS step_name, s.status, s.attempts,
               s.visits, s.last_outcome, s.last_error, s.next_attempt_at, s.lease_owner,
               s.lease_expires, s.admitted_at, s.updated_at
          FROM interp.subject_state s
          LEFT JOIN interp.steps st ON st.workflow_id = s.workflow_id
               AND st.execution_order = s.step
         WHERE s.workflow_id = %s AND s.subject_id = %s""", (workflow_id, subject_id)).fetchone()
    rows = conn.execute("""
        SELECT c.checkpoint_id, c.step, st.name AS step_name, c.visit, c.attempt, c.ok, c.outcome,
               c.error, c.started_at, c.finished_at,
               round((extract(epoch FROM c.finished_at - c.started_at) * 1000)::numeric, 1)
                   AS duration_ms,
               c.wave_id, c.run_id, c.worker_id, c.model, c.model_sha256, c.seed, c.sampling,
               c.prompt_tokens, c.completion_tokens, c.gen_ms, c.output
          FROM interp.checkpoints c
          LEFT JOIN interp.steps st ON st.workflow_id = c.workflow_id
               AND st.execution_order = c.step
         WHERE c.workflow_id = %s AND c.subject_id = %s
         ORDER BY c.started_at, c.finished_at, c.checkpoint_id""",
                        (workflow_id, subject_id)).fetchall()
    if state is None and not rows:
        raise NotFound(f"no subject {subject_id!r} in workflow {workflow_id}")
    return {"workflow": workflow_id, "subject": subject_id,
            "state": _clean(state) if state else None,
            "checkpoints": [_clean(r) for r in rows]}


# ---------------------------------------------------------------- text

def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = 0 if total <= 0 else min(width, int(width * done / total))
    return "█" * filled + "░" * (width - filled)


def step_label(step: int, width: int) -> str:
    return f"Step {step:>{width}}"


def render_status(data: dict[str, Any]) -> str:
    steps = data["steps"]
    width = max([2] + [len(str(s["step"])) for s in steps])
    rows = []
    for s in steps:
        total = s["reached"]
        pct = f"{100 * s['done'] // total}%" if total else "-"
        rows.append([step_label(s["step"], width), s["name"], s["done"], total,
                     bar(s["done"], total), pct, f"{s['velocity_per_min']:.1f}/min",
                     format_duration(s["eta_s"]), s["state"]])
    wf = data["workflow"]
    head = f"Workflow {wf['id']} · {wf['name']}" + (" · PAUSED" if wf["paused"] else "")
    table = tabulate(rows, headers=["step", "name", "done", "of", "progress", "%",
                                    "velocity", "ETA", "state"],
                     tablefmt="presto", colalign=("left", "left", "right", "right", "left",
                                                  "right", "right", "right", "left"),
                     disable_numparse=True)
    t = data["totals"]
    totals = (f"Total: {t['subjects']} subjects · {t['done']} done · {t['active']} active "
              f"({t['waiting']} waiting, {t['leased']} leased) · {t['dead']} dead · "
              f"{t['checkpoints']} checkpoints · {t['completion_per_min']:.1f} finished/min · "
              f"ETA {format_duration(t['eta_s'])}")
    lane = data["model_lane"]
    if lane["lanes"]:
        duty = lane["duty_cycle"]
        duty_s = f"{100 * duty:.0f}%" if duty is not None else "?"
        model_line = (f"Model lane: {lane['loaded_model'] or 'no model loaded'} · duty cycle "
                      f"{duty_s} · {lane['switches']} switch(es) · runs "
                      + ", ".join(f"{ln['run_id']} ({ln['status']})" for ln in lane["lanes"]))
    else:
        model_line = "Model lane: no run yet"
    lines = [head, table, totals, model_line]
    for alert in data["alerts"]:
        lines.append(f"! {alert}")
    return "\n".join(lines)


def render_trace(data: dict[str, Any]) -> str:
    st = data["state"]
    lines = [f"Workflow {data['workflow']} · subject {data['subject']}"]
    if st:
        where = (f"at step {st['step']} ({st['step_name']})" if st["step"] is not None
                 else "ended")
        lines.append(f"now {st['status']} {where} · attempts {st['attempts']}"
                     + (f" · last error: {st['last_error']}" if st["last_error"] else ""))
    rows = []
    for c in data["checkpoints"]:
        model = ""
        if c["model"]:
            model = (f"{c['model']} seed={c['seed']} tokens={c['prompt_tokens']}/"
                     f"{c['completion_tokens']} gen={c['gen_ms']}ms")
        rows.append([c["finished_at"], c["step"], c["step_name"], c["visit"], c["attempt"],
                     c["outcome"], c["duration_ms"], (c["error"] or "")[:80], model])
    lines.append(tabulate(rows, headers=["finished", "step", "name", "visit", "attempt",
                                         "outcome", "ms", "error", "model"],
                          tablefmt="presto", disable_numparse=True))
    return "\n".join(lines)


# ---------------------------------------------------------------- prune

PRUNE_BATCH = """
WITH subj AS (
    SELECT subject_id FROM interp.subject_state
     WHERE workflow_id = %(wf)s AND subject_id > %(after)s AND status IN ('done', 'dead')
     ORDER BY subject_id LIMIT %(subjects)s
), ranked AS (
    SELECT c.checkpoint_id, c.finished_at,
           row_number() OVER (PARTITION BY c.subject_id, c.step
                              ORDER BY c.finished_at DESC, c.checkpoint_id DESC) AS rn
      FROM interp.checkpoints c JOIN subj ON c.subject_id = subj.subject_id
     WHERE c.workflow_id = %(wf)s
), doomed AS (
    SELECT checkpoint_id FROM ranked WHERE rn > 1 AND finished_at < %(cutoff)s
), gone AS (
    DELETE FROM interp.checkpoints
     WHERE %(delete)s AND checkpoint_id IN (SELECT checkpoint_id FROM doomed)
    RETURNING 1
)
SELECT (SELECT count(*) FROM subj) AS subjects,
       (SELECT max(subject_id) FROM subj) AS last_subject,
       (SELECT count(*) FROM doomed) AS candidates,
       (SELECT count(*) FROM gone) AS deleted
"""


def parse_age(text: str) -> dt.timedelta:
    """'30d', '12h', '45m', '90s', '2w' -> timedelta."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise InterpError(f"bad age {text!r}: use a number and a unit, like 30d, 12h, 45m, 90s")
    n = float(m.group(1))
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return dt.timedelta(seconds=n * unit)


def prune(db: Any, workflow_id: int, older_than: dt.timedelta, batch_size: int = 5000,
          dry_run: bool = False, pause_s: float = 0.0,
          progress: Any = None) -> dict[str, Any]:
    """Delete old checkpoints of ended subjects, keeping the last per (subject, step).

    Walks the ended subjects in key order, a chunk per short transaction, and
    sizes the chunks so that each deletes about `batch_size` rows; a running
    workflow's subjects are never touched (they are not done/dead).
    """
    import time

    if batch_size < 1:
        raise InterpError("--batch-size must be at least 1")
    db.run(lambda conn: workflow_row(conn, workflow_id))
    cutoff = db.run(lambda conn: one(conn.execute(
        "SELECT now() - %s AS c", (older_than,)))["c"])
    after, chunk = "", max(1, batch_size // 10)
    totals = {"workflow": workflow_id, "cutoff": cutoff.isoformat(), "dry_run": dry_run,
              "batch_size": batch_size, "subjects_scanned": 0, "batches": 0,
              "candidates": 0, "deleted": 0}
    started = time.monotonic()
    while True:
        params = {"wf": workflow_id, "after": after, "subjects": chunk, "cutoff": cutoff,
                  "delete": not dry_run}
        row = db.run(lambda conn, p=params: conn.execute(PRUNE_BATCH, p).fetchone())
        if row["subjects"] == 0:
            break
        totals["batches"] += 1
        totals["subjects_scanned"] += row["subjects"]
        totals["candidates"] += row["candidates"]
        totals["deleted"] += row["deleted"]
        after = row["last_subject"]
        per_subject = max(row["candidates"] / row["subjects"], 0.05)
        chunk = int(max(1, min(batch_size / per_subject, chunk * 4, 50_000)))
        if progress:
            progress(totals)
        if pause_s:
            time.sleep(pause_s)
    if not dry_run and totals["deleted"]:
        db.run(lambda conn: conn.execute("SELECT interp.compact_ops_rollups()"))
    totals["seconds"] = round(time.monotonic() - started, 3)
    totals["rows_per_s"] = (round(totals["candidates"] / totals["seconds"])
                            if totals["seconds"] > 0 else None)
    return totals
