"""The monitor: what `interp status`, `interp trace` and the dashboard show.

One dict (:func:`status_data`) drives the text table, ``--json`` and the
dashboard's API, so the three never disagree. The per-step figures come from
the SQL function ``interp.step_status`` (schema/0002_ops_views.sql), which
reads small trigger-maintained rollups instead of the raw checkpoints; the
definitions of done, velocity, ETA and stall live there and in docs/ops.md.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import psycopg
from tabulate import tabulate

from .db import json_row, one
from .errors import InterpError, NotFound
from .figures import percent, round_half_up
from .operator_actions import actions_of_subject, cancelled_by_step, recent_actions
from .queries import Q
from .timeline import LANE_WINDOW_S, lane_line, lane_time, prune_timeline

BAR_WIDTH = 20


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def workflow_row(conn: psycopg.Connection[Any], workflow_id: int) -> dict[str, Any]:
    row = conn.execute(Q["monitor_workflow"], {"workflow_id": workflow_id}).fetchone()
    if row is None:
        raise NotFound(f"no workflow {workflow_id} (see: interp workflow list)")
    return row


def list_workflows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return [json_row(r) for r in conn.execute(Q["monitor_workflows"])]


def status_data(conn: psycopg.Connection[Any], workflow_id: int, stall_window_s: float = 600,
                velocity_window_s: float = 300,
                lane_window_s: float = LANE_WINDOW_S) -> dict[str, Any]:
    """Everything the monitor shows for one workflow, JSON-ready. "lane_time" is the
    model lanes' time by cause over the last lane_window_s of their record.

    Read in a transaction of its own without JIT, so the time it takes does not
    hang on the planner's statistics. Inside a caller's transaction it is a
    savepoint, and JIT stays off until the caller's transaction ends (a SET LOCAL
    outlives a released savepoint)."""
    if stall_window_s <= 0 or velocity_window_s <= 0:
        raise InterpError("the stall and velocity windows must be positive")
    with conn.transaction():
        conn.execute(Q["status_read_settings"])
        return _status_figures(conn, workflow_id, stall_window_s, velocity_window_s,
                               lane_window_s)


def _status_figures(conn: psycopg.Connection[Any], workflow_id: int, stall_window_s: float,
                    velocity_window_s: float, lane_window_s: float) -> dict[str, Any]:
    wf = workflow_row(conn, workflow_id)
    now = one(conn.execute(Q["monitor_now"]))["now"]
    by_wf = {"workflow_id": workflow_id}
    steps = _step_rows(conn, workflow_id, stall_window_s, velocity_window_s)
    counts = one(conn.execute(Q["monitor_subject_totals"], by_wf))
    checkpoints = one(conn.execute(Q["monitor_checkpoint_totals"], by_wf))
    rate = float(one(conn.execute(Q["monitor_completion_rate"], {
        **by_wf, "velocity_s": velocity_window_s}))["rate"] or 0)
    active = counts["waiting"] + counts["leased"]
    breakers = [json_row(r) for r in conn.execute(Q["monitor_breakers"], by_wf)]
    runs = [json_row(r) for r in conn.execute(Q["monitor_runs"], by_wf)]
    open_breakers = [b["actor"] for b in breakers if b["state"] == "open"]
    alerts = _alerts(steps, open_breakers, counts["dead"], stall_window_s)
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
            "eta_s": workflow_eta(active, rate, steps),
        },
        "stalled_steps": [s["step"] for s in steps if s["stalled"]],
        "breakers": breakers,
        "open_breakers": open_breakers,
        "dead_letters": counts["dead"],
        "operator_actions": recent_actions(conn, workflow_id),
        "model_lane": _model_lane(conn, workflow_id, runs),
        "lane_time": lane_time(conn, workflow_id, lane_window_s),
        "runs": runs,
        "alerts": alerts,
        "healthy": not alerts,
    }


def _step_rows(conn: psycopg.Connection[Any], workflow_id: int, stall_window_s: float,
               velocity_window_s: float) -> list[dict[str, Any]]:
    steps = [json_row(r) for r in conn.execute(Q["monitor_step_status"], {
        "workflow_id": workflow_id, "stall_s": stall_window_s, "velocity_s": velocity_window_s})]
    cancelled = cancelled_by_step(conn, workflow_id)
    for s in steps:
        s.pop("workflow_id", None)
        s["cancelled"] = cancelled.get(s["step"], 0)
    return steps


def workflow_eta(active: int, finishing_per_min: float,
                steps: list[dict[str, Any]]) -> float | None:
    """Seconds until the active subjects are through.

    Once subjects finish: the smaller of two estimates, because both err high.
    The rate at which subjects finish is counted over a window that, while the
    first subjects reach the end, is mostly time before any could (make run's
    22 postings: 6 done after 210 s said 560 s more; it took 18). The checkpoints
    still to come at the steps' velocities count every later step for each
    subject, though gates end some early. Before any subject has finished: the
    slowest step's ETA, or when a step with work has no velocity yet, the
    estimate from all the steps' velocities."""
    if active == 0:
        return 0.0
    if finishing_per_min > 0:
        by_finishing = float(round(active * 60.0 / finishing_per_min))
        by_velocities = estimate_eta_from_velocities(steps)
        return by_finishing if by_velocities is None else min(by_finishing, by_velocities)
    pending = [s["eta_s"] for s in steps if s["waiting"] + s["leased"] > 0]
    if pending and None not in pending:
        return max(pending)
    return estimate_eta_from_velocities(steps)


#: Step states in which work is held up: while a step with work is in one of
#: them, no rate seen so far says when it will move again.
HELD_UP_STATES = ("stalled", "breaker open", "paused")


def estimate_eta_from_velocities(steps: list[dict[str, Any]]) -> float | None:
    """Seconds until the active subjects are through, from the per-step velocities alone.

    For the time before any subject has finished, when some step with work has
    no velocity yet (its first wave is still running, or nobody got there):
    the checkpoints still to come divided by the rate at which the workflow
    makes checkpoints now. Each active subject (waiting or leased) is counted
    as one checkpoint at its step and one at every later step in execution
    order, so gates that end a subject early make this an overestimate. The
    rate is the sum of the steps' velocities. None when nothing moves, or
    when a step with work is stalled, behind an open breaker or paused.
    """
    ordered = sorted(steps, key=lambda s: s["step"])
    if any(s["waiting"] + s["leased"] > 0 and (s["stalled"] or s["state"] in HELD_UP_STATES)
           for s in ordered):
        return None
    per_min = sum(float(s["velocity_per_min"] or 0) for s in ordered)
    if per_min <= 0:
        return None
    to_come = sum((s["waiting"] + s["leased"]) * (len(ordered) - i)
                  for i, s in enumerate(ordered))
    return float(round(to_come * 60.0 / per_min))


def _model_lane(conn: psycopg.Connection[Any], workflow_id: int,
                runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The model lane of the running runs; when none runs, of the latest run whose
    lane did work (a rerun that found nothing to do would show a duty cycle of 0),
    else of the latest run."""
    running = [r["run_id"] for r in runs if r["status"] == "running"]
    worked = conn.execute(Q["monitor_lane_run_with_work"],
                          {"workflow_id": workflow_id}).fetchone() if not running else None
    lane_runs = running or ([worked["run_id"]] if worked else [r["run_id"] for r in runs[:1]])
    lanes = [_rounded_lane(json_row(r))
             for r in conn.execute(Q["monitor_model_lanes"], {"run_ids": lane_runs})]
    events = [json_row(r) for r in conn.execute(Q["monitor_model_events"],
                                              {"workflow_id": workflow_id})]
    return {
        "loaded_model": next((ln["loaded_model"] for ln in lanes
                              if ln["status"] == "running" and ln["loaded_model"]), None),
        "duty_cycle": lanes[0]["duty_cycle"] if lanes else None,
        "switches": sum(int(ln["switches"]) for ln in lanes),
        "lanes": lanes,
        "events": events,
    }


def _rounded_lane(lane: dict[str, Any]) -> dict[str, Any]:
    for key in ("wall_ms", "busy_ms", "load_ms"):
        lane[key] = round(float(lane[key] or 0), 1)
    lane["duty_cycle"] = (round(float(lane["duty_cycle"]), 4)
                          if lane["duty_cycle"] is not None else None)
    return lane


def _alerts(steps: list[dict[str, Any]], open_breakers: list[str], dead: int,
            stall_window_s: float) -> list[str]:
    alerts = [f"{s['waiting'] + s['leased']} subject(s) at step {s['step']}, which no "
              "longer exists (give the step back, or move or delete their subject_state rows)"
              for s in steps if s["state"] == "missing step" and s["stalled"]]
    alerts += [f"step {s['step']} ({s['name']}) stalled: {s['waiting']} waiting, "
               f"{s['leased']} leased, no checkpoint for {stall_window_s:g}s"
               for s in steps if s["stalled"] and s["state"] != "missing step"]
    # An open breaker is an alert only while subjects wait behind it: one that tripped
    # on the last subjects of its steps, with none left waiting, holds nothing up.
    held_up = {s["actor"] for s in steps if s["waiting"] + s["leased"] > 0}
    alerts += [f"breaker open for actor {actor}" for actor in open_breakers if actor in held_up]
    if dead:
        alerts.append(f"{dead} dead letter(s)")
    return alerts


def velocity_series(conn: psycopg.Connection[Any], workflow_id: int,
                    minutes: int = 60) -> dict[str, Any]:
    """Ok checkpoints per minute per step over the last `minutes`, zero-filled."""
    workflow_row(conn, workflow_id)
    minutes = max(1, min(int(minutes), 24 * 60))
    axis = [r["minute"] for r in conn.execute(Q["velocity_minutes"], {"minutes": minutes})]
    rows = conn.execute(Q["velocity_counts"],
                        {"workflow_id": workflow_id, "since": axis[0]}).fetchall()
    names = {r["execution_order"]: r["name"]
             for r in conn.execute(Q["velocity_step_names"], {"workflow_id": workflow_id})}
    index = {m: i for i, m in enumerate(axis)}
    series = {step: [0] * len(axis) for step in names}
    for r in rows:
        if r["step"] in series and r["minute"] in index:
            series[r["step"]][index[r["minute"]]] = r["n"]
    return {"workflow": workflow_id, "minutes": [m.isoformat() for m in axis],
            "steps": [{"step": s, "name": names[s], "counts": series[s]} for s in names]}


def overview_series(conn: psycopg.Connection[Any], workflow_id: int,
                    minutes: int = 60) -> dict[str, Any]:
    """The whole workflow per minute over the last `minutes`, on the velocity axis:
    subjects finished, and the model lane's completion tokens per second of
    generation time (None in a minute without model output)."""
    workflow_row(conn, workflow_id)
    minutes = max(1, min(int(minutes), 24 * 60))
    axis = [r["minute"] for r in conn.execute(Q["velocity_minutes"], {"minutes": minutes})]
    since = {"workflow_id": workflow_id, "since": axis[0]}
    finished = {r["minute"]: int(r["n"])
                for r in conn.execute(Q["overview_finished_minutes"], since)}
    tokens = {r["minute"]: r for r in conn.execute(Q["overview_model_tokens_minutes"], since)}
    return {"workflow": workflow_id, "minutes": [m.isoformat() for m in axis],
            "finished": [finished.get(m, 0) for m in axis],
            "tokens": [int(tokens[m]["tokens"]) if m in tokens else 0 for m in axis],
            "tokens_per_s": [_tokens_per_s(tokens.get(m)) for m in axis]}


def _tokens_per_s(row: dict[str, Any] | None) -> float | None:
    if row is None or not row["gen_ms"]:
        return None
    return round(float(row["tokens"]) * 1000.0 / float(row["gen_ms"]), 1)


def trace_data(conn: psycopg.Connection[Any], workflow_id: int, subject_id: str,
               prompts: bool = False) -> dict[str, Any]:
    """Every checkpoint of one subject, in order, and where it stands now. With
    prompts, also the rendered prompt of each model checkpoint, by sha256."""
    workflow_row(conn, workflow_id)
    subject = {"workflow_id": workflow_id, "subject_id": subject_id}
    state = conn.execute(Q["trace_subject_state"], subject).fetchone()
    rows = conn.execute(Q["trace_checkpoints"], subject).fetchall()
    if state is None and not rows:
        raise NotFound(f"no subject {subject_id!r} in workflow {workflow_id}")
    data = {"workflow": workflow_id, "subject": subject_id,
            "state": json_row(state) if state else None,
            "checkpoints": [json_row(r) for r in rows],
            "operator_actions": actions_of_subject(conn, workflow_id, subject_id)}
    if prompts:
        data["prompts"] = prompt_texts(conn, workflow_id, subject_id)
    return data


def prompt_texts(conn: psycopg.Connection[Any], workflow_id: int,
                 subject_id: str) -> dict[str, dict[str, str | None]]:
    """The rendered prompts of a subject's model checkpoints: sha256 -> system, user.
    A prompt pruned with its checkpoints is absent."""
    out: dict[str, dict[str, str | None]] = {}
    for r in conn.execute(Q["trace_prompts"], {"workflow_id": workflow_id,
                                                "subject_id": subject_id}):
        system, user = json.loads(r["body"])
        out[r["sha256"]] = {"system": system, "user": user}
    return out


# ---------------------------------------------------------------- text

def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round_half_up(seconds))   # as the page rounds it
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


def step_table(steps: list[dict[str, Any]], bar_width: int = BAR_WIDTH) -> str:
    """The per-step rows (`Step  2 | name | done | of | progress ...`): the layout of
    `interp status`, which `interp run`'s live view shows too (on a narrow terminal
    with a shorter bar, or none: bar_width 0)."""
    width = max([2] + [len(str(s["step"])) for s in steps])
    rows = []
    for s in steps:
        total = s["reached"]
        pct = f"{100 * s['done'] // total}%" if total else "-"
        rows.append([step_label(s["step"], width), s["name"], s["done"], total,
                     bar(s["done"], total, bar_width), pct,
                     f"{round_half_up(s['velocity_per_min'], 1)}/min",
                     format_duration(s["eta_s"]), s["state"]])
    headers = ["step", "name", "done", "of", "progress", "%", "velocity", "ETA", "state"]
    align = ["left", "left", "right", "right", "left", "right", "right", "right", "left"]
    if bar_width <= 0:
        for cols in (*rows, headers, align):
            del cols[4]
    return tabulate(rows, headers=headers, tablefmt="presto", colalign=align,
                    disable_numparse=True)


def render_status(data: dict[str, Any]) -> str:
    wf = data["workflow"]
    head = f"Workflow {wf['id']} · {wf['name']}" + (" · PAUSED" if wf["paused"] else "")
    table = step_table(data["steps"])
    t = data["totals"]
    totals = (f"Total: {t['subjects']} subjects · {t['done']} done · {t['active']} active "
              f"({t['waiting']} waiting, {t['leased']} leased) · {t['dead']} dead · "
              + (f"{t['cancelled']} cancelled · " if t.get("cancelled") else "")
              + f"{t['checkpoints']} checkpoints · "
              f"{round_half_up(t['completion_per_min'], 1)} finished/min · "
              f"ETA {format_duration(t['eta_s'])}")
    lane = data["model_lane"]
    if lane["lanes"]:
        duty = lane["duty_cycle"]
        duty_s = f"{percent(duty)}%" if duty is not None else "?"
        model_line = (f"Model lane: {lane['loaded_model'] or 'no model loaded'} · duty cycle "
                      f"{duty_s} · {lane['switches']} switch(es) · runs "
                      + ", ".join(f"{ln['run_id']} ({ln['status']})" for ln in lane["lanes"]))
    else:
        model_line = "Model lane: no run yet"
    lines = [head, table, totals, model_line]
    lane_time_line = lane_line(data.get("lane_time") or {})
    if lane_time_line:
        lines.append(lane_time_line)
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
        lines.append(f"admitted {st['admitted_at']} by entry point {st['entry_point']}"
                     + (f" in run {st['admitted_by_run']}" if st.get("admitted_by_run") else ""))
    rows = []
    for c in data["checkpoints"]:
        model = ""
        if c["model"]:
            model = (f"{c['model']} seed={c['seed']} tokens={c['prompt_tokens']}/"
                     f"{c['completion_tokens']} gen={c['gen_ms']}ms"
                     + (f" batch={c['batch_width']}" if c.get("batch_width") else ""))
        rows.append([c["finished_at"], c["step"], c["step_name"], c["visit"], c["attempt"],
                     c["outcome"], c["duration_ms"], (c["error"] or "")[:80], model])
    lines.append(tabulate(rows, headers=["finished", "step", "name", "visit", "attempt",
                                         "outcome", "ms", "error", "model"],
                          tablefmt="presto", disable_numparse=True))
    for a in data.get("operator_actions") or []:
        def at(step: Any) -> str:
            return "ended" if step is None else f"at step {step}"

        lines.append(f"{a['at']} operator {a['verb']} (action {a['action_id']}, "
                     f"{a['db_user']}/{a['os_user']}): {a['from_status']} {at(a['from_step'])} "
                     f"-> {a['to_status']} {at(a['to_step'])}; reason: {a['reason']}")
    lines += _render_prompts(data)
    return "\n".join(lines)


def _render_prompts(data: dict[str, Any]) -> list[str]:
    """Each model checkpoint's prompt, under the step and visit it was asked at."""
    if "prompts" not in data:
        return []
    lines: list[str] = []
    for c in data["checkpoints"]:
        sha = c.get("prompt_sha256")
        if not sha:
            continue
        lines.append(f"--- prompt of step {c['step']} visit {c['visit']} attempt "
                     f"{c['attempt']} (sha256 {sha[:12]})")
        prompt = data["prompts"].get(sha)
        if prompt is None:
            lines.append("(pruned)")
            continue
        if prompt["system"]:
            lines.append(f"[system]\n{prompt['system']}")
        lines.append(f"[user]\n{prompt['user']}")
    return lines


# ---------------------------------------------------------------- prune

def parse_age(text: str) -> dt.timedelta:
    """'30d', '12h', '45m', '90s', '2w' -> timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise InterpError(f"bad age {text!r}: use a number and a unit, like 30d, 12h, 45m, 90s")
    n = float(m.group(1))
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return dt.timedelta(seconds=n * unit)


def prune(db: Any, workflow_id: int, older_than: dt.timedelta, batch_size: int = 5000,
          dry_run: bool = False, pause_s: float = 0.0,
          progress: Any = None) -> dict[str, Any]:
    """Delete old checkpoints of ended subjects, keeping the last per (subject, step),
    and the workflow's timeline (lane intervals, hardware samples) older than the cutoff.

    Walks the ended subjects in key order, a chunk per short transaction, and
    sizes the chunks so that each deletes about `batch_size` rows; a running
    workflow's subjects are never touched (they are not done/dead).
    """
    if batch_size < 1:
        raise InterpError("--batch-size must be at least 1")
    db.run(lambda conn: workflow_row(conn, workflow_id))
    cutoff = db.run(lambda conn: one(conn.execute(
        Q["prune_cutoff"], {"older_than": older_than}))["cutoff"])
    after, chunk = "", max(1, batch_size // 10)
    totals = {"workflow": workflow_id, "cutoff": cutoff.isoformat(), "dry_run": dry_run,
              "batch_size": batch_size, "subjects_scanned": 0, "batches": 0,
              "candidates": 0, "deleted": 0, "prompts_deleted": 0}
    started = time.monotonic()
    while True:
        params = {"wf": workflow_id, "after": after, "subjects": chunk, "cutoff": cutoff,
                  "delete": not dry_run}
        row = db.run(lambda conn, p=params: _prune_batch(conn, p))
        if row["subjects"] == 0:
            break
        totals["batches"] += 1
        totals["subjects_scanned"] += row["subjects"]
        totals["candidates"] += row["candidates"]
        totals["deleted"] += row["deleted"]
        totals["prompts_deleted"] += row["prompts_deleted"]
        after = row["last_subject"]
        per_subject = max(row["candidates"] / row["subjects"], 0.05)
        chunk = int(max(1, min(batch_size / per_subject, chunk * 4, 50_000)))
        if progress:
            progress(totals)
        if pause_s:
            time.sleep(pause_s)
    if not dry_run and totals["deleted"]:
        db.run(lambda conn: conn.execute(Q["prune_compact_rollups"]))
    totals.update(prune_timeline(db, workflow_id, cutoff, batch_size=batch_size,
                                 dry_run=dry_run))
    if not dry_run and (totals["deleted"] or totals["intervals_deleted"]
                        or totals["samples_deleted"]):
        db.run(lambda conn: conn.execute(Q["prune_analyze"]))
    totals["seconds"] = round(time.monotonic() - started, 3)
    totals["rows_per_s"] = (round(totals["candidates"] / totals["seconds"])
                            if totals["seconds"] > 0 else None)
    return totals


def _prune_batch(conn: psycopg.Connection[Any], params: dict[str, Any]) -> dict[str, Any]:
    """One chunk of prune, and the prompts its deleted checkpoints leave unused, in
    one transaction."""
    row = dict(conn.execute(Q["prune_batch"], params).fetchone() or {})
    shas = row.pop("prompts") or []
    row["prompts_deleted"] = (conn.execute(Q["prune_prompts"], {"shas": shas}).rowcount
                              if shas else 0)
    return row
