"""The timeline: where the model lane's time went, and how busy the hardware was.

Reads what the engine records while it runs (interp.lane_intervals, written
from the model lane's clock; interp.utilisation, from the utilisation recorder) together
with the model events and the breakers, for `interp status` (the lane-time
line), `interp timeline` and the dashboard's timeline. docs/ops.md explains
the causes.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import psycopg

from ..db import json_row, one
from ..errors import InterpError, NotFound
from ..lane_clock import CAUSES
from ..queries import Q
from .figures import percent, round_half_up

# How the status line names each cause.
CAUSE_LABELS = {"generating": "generating", "loading": "loading", "switching": "switching",
                "waiting_claim": "claiming", "breaker": "breaker", "limited": "limited",
                "waiting_commit": "waiting on DB", "idle": "idle", "paused": "paused"}
# The dashboard's timeline is drawn from at most this many sample buckets.
SAMPLE_POINTS = 600
MAX_INTERVALS = 5000
# The window of `interp status`'s lane-time line, ending at the lane's latest interval.
LANE_WINDOW_S = 3600.0


def lane_time(conn: psycopg.Connection[Any], workflow_id: int,
              window_s: float = LANE_WINDOW_S) -> dict[str, Any]:
    """The model lanes' time over the last window_s seconds of their record (up to
    now while a run goes), as a share per cause; and the mean GPU utilisation
    over the window, overall and while generating (None without GPU samples)."""
    if window_s <= 0:
        raise InterpError("the lane-time window must be positive")
    by_wf = {"workflow_id": workflow_id}
    end = one(conn.execute(Q["timeline_lane_window_end"], by_wf))["ended_at"]
    out: dict[str, Any] = {"window_s": window_s, "start": None, "end": None, "covered_s": 0.0,
                           "seconds": {}, "share": {}, "gpu_util_mean": None,
                           "gpu_util_generating": None}
    if end is None:
        return out
    span = {**by_wf, "start": end - dt.timedelta(seconds=window_s), "end": end}
    seconds = {r["cause"]: float(r["seconds"] or 0)
               for r in conn.execute(Q["timeline_lane_seconds"], span)}
    total = sum(seconds.values())
    gpu = one(conn.execute(Q["timeline_gpu_mean"], span))
    out.update({
        "start": span["start"].isoformat(), "end": end.isoformat(), "covered_s": round(total, 3),
        "seconds": {c: round(seconds[c], 3) for c in CAUSES if seconds.get(c)},
        "share": {c: round(seconds[c] / total, 4) for c in CAUSES
                  if total > 0 and seconds.get(c)},
        "gpu_util_mean": _round(gpu["gpu_mean"]),
        "gpu_util_generating": _round(gpu["gpu_generating"]),
    })
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 1)


def lane_line(lane: dict[str, Any]) -> str | None:
    """`lane 94% generating · 3% switching · 2% breaker · 1% waiting on DB` (causes
    under half a percent left out), with the mean GPU use when there is a GPU."""
    share = lane.get("share") or {}
    if not share:
        return None
    parts = [f"{percent(v)}% {CAUSE_LABELS[c]}"
             for c, v in sorted(share.items(), key=lambda kv: (-kv[1], CAUSES.index(kv[0])))
             if v >= 0.005]
    line = "lane " + " · ".join(parts)
    if lane.get("gpu_util_mean") is not None:
        line += f" · GPU {round_half_up(lane['gpu_util_mean'])}% mean"
        if lane.get("gpu_util_generating") is not None:
            line += f" ({round_half_up(lane['gpu_util_generating'])}% while generating)"
    return line


def timeline_data(conn: psycopg.Connection[Any], workflow_id: int,
                  since_s: float = 3600.0, *, fit: bool = False) -> dict[str, Any]:
    """The last since_s seconds of a workflow's timeline: the lane intervals, the
    hardware samples (averaged into at most SAMPLE_POINTS buckets) and the
    markers (model loads and switches, breaker openings, pauses), JSON-ready.
    With fit, the window starts where the record in those seconds begins."""
    if since_s <= 0:
        raise InterpError("--since must be more than 0")
    if conn.execute(Q["monitor_workflow"], {"workflow_id": workflow_id}).fetchone() is None:
        raise NotFound(f"no workflow {workflow_id} (see: interp workflow list)")
    now = one(conn.execute(Q["timeline_now"]))["now"]
    since = now - dt.timedelta(seconds=since_s)
    window = {"workflow_id": workflow_id, "since": since}
    if fit:
        first = one(conn.execute(Q["timeline_first_moment"], window))["first"]
        if first is not None:
            since_s = max(1.0, (now - first).total_seconds())
            since = first
            window["since"] = since
    intervals = [json_row(r) for r in conn.execute(Q["timeline_intervals"],
                                                 {**window, "limit": MAX_INTERVALS})]
    bucket_s = max(1, math.ceil(since_s / SAMPLE_POINTS))
    samples = [json_row(r) for r in conn.execute(Q["timeline_samples"],
                                               {**window, "bucket_s": bucket_s})]
    markers = (_model_markers(conn, window) + _breaker_markers(conn, window)
               + _pause_markers(intervals))
    markers.sort(key=lambda m: m["at"])
    return {"workflow": workflow_id, "now": now.isoformat(), "since": since.isoformat(),
            "since_s": since_s, "fit": fit, "bucket_s": bucket_s, "causes": list(CAUSES),
            "labels": CAUSE_LABELS, "intervals": intervals, "samples": samples,
            "markers": markers}


def _model_markers(conn: psycopg.Connection[Any], window: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"kind": e["event"], "at": e["at"].isoformat(), "run_id": e["run_id"],
             "model": e["model"], "text": model_event_text(e)}
            for e in conn.execute(Q["timeline_model_events"], window)]


def model_event_text(e: dict[str, Any]) -> str:
    """A model event's marker text; its duration in ms by the one rounding rule, as
    the page's model-lane table shows the same figure."""
    ms = f" ({round_half_up(e['duration_ms'])} ms)" if e["duration_ms"] else ""
    if e["event"] == "switch":
        return f"switched model {e['from_model'] or '?'} → {e['model']}{ms}"
    if e["event"] == "load":
        return f"loaded model {e['model']}{ms}"
    return f"loading model {e['model']} failed{ms}: {e['detail'] or ''}".rstrip(": ")


def _breaker_markers(conn: psycopg.Connection[Any],
                     window: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b in conn.execute(Q["timeline_breaker_openings"], window):
        text = f"breaker opened for actor {b['actor']}" + (
            f" (step {b['step']})" if b["step"] is not None else "") + (
            f": {b['last_error']}" if b["last_error"] else "")
        out.append({"kind": "breaker_open", "at": b["opened_at"].isoformat(),
                    "actor": b["actor"], "step": b["step"], "state": b["state"], "text": text})
    return out


def _pause_markers(intervals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A marker where each stretch of paused lane time begins (per run)."""
    out = []
    last_cause: dict[Any, str] = {}
    for i in intervals:
        key = (i["run_id"], i["lane"])
        if i["cause"] == "paused" and last_cause.get(key) != "paused":
            out.append({"kind": "pause", "at": i["started_at"], "run_id": i["run_id"],
                        "text": f"workflow paused (run {i['run_id']})"})
        last_cause[key] = i["cause"]
    return out


def render_timeline(data: dict[str, Any]) -> str:
    """The intervals as a table (times in the database's time zone), then the markers."""
    from tabulate import tabulate

    rows = [[_hms(i["started_at"]), _hms(i["ended_at"]), round_half_up(float(i['seconds']), 1),
             i["run_id"], i["cause"], i["model"] or "", "" if i["step"] is None else i["step"],
             "" if i["subjects"] is None else i["subjects"]] for i in data["intervals"]]
    lines = [f"Workflow {data['workflow']} · timeline since {data['since']}"]
    if rows:
        lines.append(tabulate(rows, headers=["from", "to", "s", "run", "cause", "model", "step",
                                             "subjects"], tablefmt="presto",
                              disable_numparse=True))
    else:
        lines.append("no lane intervals in this window")
    if len(data["intervals"]) >= MAX_INTERVALS:
        lines.append(f"(the first {MAX_INTERVALS} intervals only: ask for a shorter --since)")
    for m in data["markers"]:
        lines.append(f"{_hms(m['at'])} ◆ {m['text']}")
    return "\n".join(lines)


def _hms(iso: str) -> str:
    """The time of day of an ISO timestamp, to the tenth of a second."""
    t = dt.datetime.fromisoformat(iso)
    return t.strftime("%H:%M:%S.") + f"{t.microsecond // 100_000}"
