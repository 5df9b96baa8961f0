"""Status and ETA: what `interp status`, `interp run`'s view and the dashboard show.

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

from ..db import json_row, one
from ..errors import InterpError, NotFound
from ..operator_actions import cancelled_by_step, recent_actions
from ..queries import Q
from .figures import percent, round_half_up, tokens_per_s
from .timeline import LANE_WINDOW_S, lane_line, lane_time

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
    """Everything `interp status` shows for one workflow, JSON-ready. "lane_time" is the
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
            "tokens_per_s": [_minute_rate(tokens.get(m)) for m in axis]}


def _minute_rate(row: dict[str, Any] | None) -> float | None:
    if row is None or not row["gen_ms"]:
        return None
    return tokens_per_s(row["tokens"], float(row["gen_ms"]) / 1000.0)


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
