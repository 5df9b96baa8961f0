"""What `interp run` shows while it runs: a live view on a terminal, log lines otherwise.

A reporter thread takes a :class:`Snapshot` now and then: the workflow's
per-step figures from :func:`ops.status.status_data` (the numbers of `interp
status`), this run's model tokens per second from its checkpoints, and the
run's own in-process tally (waves, checkpoints). A view draws it:

- :class:`LiveView`, on a terminal: a compact table redrawn about once a second
  with rich, replaced by a final summary when the run ends;
- :class:`LogView`, elsewhere (nohup, systemd, CI): one line per interval, as
  text (``key=value``) or JSON.

The reporter must never slow or break the run, so it reads the database on a
connection of its own (the run's pool is sized for the run's own threads and
a progress read must not make them wait), with a short statement timeout; a
failed read is reported once and the view goes on with the in-process tally.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import psycopg
from psycopg.rows import dict_row

from ..errors import first_line
from ..queries import Q
from .figures import round_half_up, tokens_per_s
from .status import format_duration, status_data, step_label, step_table

log = logging.getLogger(__name__)

#: The window of the model lane's tokens/s and of waves/s: recent enough to show
#: a slowdown, long enough to smooth one wave's burst.
RATE_WINDOW_S = 60.0
#: Statement timeout of the reporter's reads, and how long it waits to connect.
READ_TIMEOUT_MS = 2000
CONNECT_TIMEOUT_S = 3
#: How often the live view is redrawn.
LIVE_REFRESH_S = 1.0


@dataclass
class Snapshot:
    """One look at a run: its own tally, and the workflow's figures when they could be read."""

    elapsed_s: float
    run_id: int | None = None
    status: str = "running"           # the run's status; set by the last snapshot
    waves: int = 0
    checkpoints: int = 0
    admitted: int = 0
    model_loads: int = 0
    model_switches: int = 0
    by_step: dict[int, int] = field(default_factory=dict)
    waves_per_s: float | None = None
    workflow: dict[str, Any] | None = None   # id, name, paused (from the database)
    steps: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] | None = None
    has_model_steps: bool = False
    model: str | None = None
    tokens_per_s: float | None = None
    lane_loads: int | None = None     # the model lane's loads and switches so far (its
    lane_switches: int | None = None  # events); the tally has them only once the lane ends
    fresh: bool = False               # the figures above were read for this snapshot
    final: bool = False


#: The Snapshot fields read from the database (the rest is the in-process tally).
DB_FIGURES = ("workflow", "steps", "totals", "has_model_steps", "model", "tokens_per_s",
              "lane_loads", "lane_switches")


class RunLike(Protocol):
    """What the reporter reads from a run: the Runner's public properties."""

    @property
    def run_id(self) -> int | None: ...

    @property
    def summary(self) -> Any: ...


# ---------------------------------------------------------------- reading

def model_tokens_per_s(conn: psycopg.Connection[Any], run_id: int,
                       window_s: float = RATE_WINDOW_S) -> float | None:
    """Completion tokens per second that one run's model steps finished over the last
    `window_s` seconds (or since the run began, if later); None before any time passed."""
    row = conn.execute(Q["progress_model_tokens"],
                       {"run_id": run_id, "window_s": window_s}).fetchone()
    if row is None:
        return None
    return tokens_per_s(row["tokens"], row["seconds"])


def read_workflow_figures(conn: psycopg.Connection[Any], workflow_id: int,
                          run_id: int | None, window_s: float) -> dict[str, Any]:
    """The database's part of a snapshot, in one transaction."""
    data = status_data(conn, workflow_id)
    has_model = any(s.get("actor_kind") == "model" for s in data["steps"])
    lane = next((ln for ln in data["model_lane"]["lanes"] if ln["run_id"] == run_id), None)
    return {
        "workflow": data["workflow"],
        "steps": data["steps"],
        "totals": data["totals"],
        "has_model_steps": has_model,
        "model": lane["loaded_model"] if lane else None,
        # The lane view counts a switch as a load too; the run's tally (and so the
        # final summary) counts the models loaded from file: the 'load' events.
        "lane_loads": int(lane["loads"]) - int(lane["switches"]) if lane else None,
        "lane_switches": int(lane["switches"]) if lane else None,
        "tokens_per_s": (model_tokens_per_s(conn, run_id, window_s)
                         if has_model and run_id else None),
    }


class ProgressSource:
    """Takes snapshots of one run: the Runner's tally, and the database on its own connection."""

    def __init__(self, dsn: str, workflow_id: int, run: RunLike):
        self.dsn = dsn
        self.workflow_id = workflow_id
        self.run = run
        self.started = time.monotonic()
        self.conn: psycopg.Connection[Any] | None = None
        self.waves_seen: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.errors_seen: set[str] = set()
        self.on_error: Any = None          # called once per distinct error with its message
        self.last: Snapshot | None = None

    def snapshot(self, final: bool = False, read_db: bool = True) -> Snapshot:
        now = time.monotonic()
        snap = Snapshot(elapsed_s=now - self.started, run_id=self.run.run_id or None,
                        final=final)
        self.add_tally(snap, now)
        figures = (self.read_figures(snap.run_id, snap.elapsed_s if final else RATE_WINDOW_S)
                   if read_db else None)
        snap.fresh = figures is not None
        if figures is None and self.last is not None:   # show the last figures we had
            figures = {key: getattr(self.last, key) for key in DB_FIGURES}
        for key, value in (figures or {}).items():
            setattr(snap, key, value)
        self.last = snap
        return snap

    def add_tally(self, snap: Snapshot, now: float) -> None:
        summary = self.run.summary
        if summary is None:          # the run has not started yet
            return
        snap.status = summary.status if snap.final else "running"
        snap.waves, snap.checkpoints = summary.waves, summary.checkpoints
        snap.admitted = summary.admitted
        snap.model_loads, snap.model_switches = summary.model_loads, summary.model_switches
        snap.by_step = copy_counts(summary.by_step)
        snap.waves_per_s = self.waves_rate(now, summary.waves, snap.final)

    def waves_rate(self, now: float, waves: int, final: bool) -> float | None:
        """Waves per second over the last minute (over the whole run for the final figure)."""
        if final:
            elapsed = now - self.started
            return round(waves / elapsed, 2) if elapsed > 0 else None
        self.waves_seen.append((now, waves))
        while len(self.waves_seen) > 2 and now - self.waves_seen[1][0] >= RATE_WINDOW_S:
            self.waves_seen.popleft()
        then, before = self.waves_seen[0]
        return round((waves - before) / (now - then), 2) if now - then >= 0.5 else None

    def read_figures(self, run_id: int | None, window_s: float) -> dict[str, Any] | None:
        try:
            conn = self.connection()
            with conn.transaction():
                return read_workflow_figures(conn, self.workflow_id, run_id, window_s)
        except Exception as exc:  # noqa: BLE001 - a progress read must never stop the run
            self.report_once(exc, "read the workflow's figures")
            self.close()             # reconnect on the next read
            return None

    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(
                self.dsn, autocommit=True, row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT_S, application_name="interp-progress",
                options=f"-c statement_timeout={READ_TIMEOUT_MS}")
        return self.conn

    def report_once(self, exc: Exception, doing: str) -> None:
        message = f"{exc.__class__.__name__}: {first_line(exc)}"
        if message in self.errors_seen:
            return
        self.errors_seen.add(message)
        text = f"progress: cannot {doing} ({message}); skipping"
        if self.on_error is not None:
            self.on_error(text)
        else:
            log.warning("%s", text)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass


def copy_counts(counts: dict[int, int]) -> dict[int, int]:
    """A copy of a dict another thread may be adding to (a resize mid-copy raises)."""
    for _ in range(3):
        try:
            return dict(counts)
        except RuntimeError:
            continue
    return {}


# ---------------------------------------------------------------- drawing

def model_line(snap: Snapshot) -> str:
    if not snap.has_model_steps:
        return "Model lane: no model steps"
    tps = (f"{round_half_up(snap.tokens_per_s, 1)} tokens/s" if snap.tokens_per_s is not None
           else "? tokens/s")
    what = "average" if snap.final and snap.fresh else "last minute"
    loads, switches = snap.model_loads, snap.model_switches
    if not snap.final and snap.lane_loads is not None:
        loads, switches = snap.lane_loads, snap.lane_switches or 0
    return (f"Model lane: {snap.model or 'no model loaded'} · {tps} ({what}) · "
            f"{loads} load(s), {switches} switch(es)")


def elapsed_text(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 1 else format_duration(seconds)


def run_line(snap: Snapshot) -> str:
    rate = f"{round_half_up(snap.waves_per_s, 1)}/s" if snap.waves_per_s is not None else "?/s"
    t = snap.totals
    where = (f" · {t['done']}/{t['subjects']} subjects done, {t['active']} active, "
             f"{t['dead']} dead" if t else "")
    if t and t.get("cancelled"):
        where += f", {t['cancelled']} cancelled"   # by an operator (interp cancel)
    eta = "" if snap.final else f" · ETA {format_duration(t['eta_s']) if t else '?'}"
    return (f"Run {snap.run_id or '-'} {snap.status} · {elapsed_text(snap.elapsed_s)} · "
            f"{snap.waves} waves ({rate}) · {snap.checkpoints} checkpoints · "
            f"{snap.admitted} admitted{where}{eta}")


#: Step states with work in hand (the rest are idle or waiting on nothing).
BUSY_STATES = ("running", "waiting", "stalled", "breaker open", "limited", "paused",
               "missing step")


def step_is_active(step: dict[str, Any]) -> bool:
    """Subjects wait or are leased at the step, or its state says it has work in hand."""
    return step["waiting"] + step["leased"] > 0 or step.get("state") in BUSY_STATES


def step_has_work(step: dict[str, Any]) -> bool:
    """Active, or it finished some in the velocity window."""
    return step_is_active(step) or float(step.get("velocity_per_min") or 0) > 0


def fold_steps(steps: list[dict[str, Any]], rows: int) -> tuple[list[dict[str, Any]], str]:
    """At most `rows` of the steps, those with work (shown in execution order), and a
    line that sums up the ones left out: finished, not reached, and any with work
    that did not fit. When not all fit, the active steps (subjects waiting or
    leased there) go before those that only finished some in the velocity window,
    so a backlog late in the workflow is not folded away behind early steps."""
    busy = ([s for s in steps if step_is_active(s)]
            + [s for s in steps if step_has_work(s) and not step_is_active(s)])
    shown_ids = {id(s) for s in busy[:max(rows, 0)]}
    shown = [s for s in steps if id(s) in shown_ids]
    left = [s for s in steps if id(s) not in shown_ids]
    finished = sum(1 for s in left if not step_has_work(s) and s["reached"] > 0)
    untouched = sum(1 for s in left if not step_has_work(s) and s["reached"] == 0)
    parts = [f"{finished} finished" if finished else "",
             f"{untouched} not reached" if untouched else "",
             f"{len(left) - finished - untouched} more with work" if
             len(left) > finished + untouched else ""]
    done = sum(int(s["done"]) for s in left)
    summary = (f"+ {len(left)} more step(s): " + ", ".join(p for p in parts if p)
               + f" · {done} checkpoint(s) done there")
    return shown, summary


def fitted_table(steps: list[dict[str, Any]], max_width: int | None) -> str:
    """The step table, narrowed to max_width when it can be: a shorter bar, then
    none, then shorter step names (the state column, last, is the one to keep).
    Widths are terminal cells (a CJK character takes two), and a name's line
    breaks become spaces, so that each step is one line of the view."""
    from rich.cells import cell_len, set_cell_size

    def widest(table: str) -> int:
        return max(cell_len(line) for line in table.splitlines())

    steps = [{**s, "name": " ".join(str(s["name"]).split())} for s in steps]
    table = step_table(steps)
    if max_width is None:
        return table
    for bar_width in (10, 0):
        if widest(table) <= max_width:
            return table
        table = step_table(steps, bar_width)
    over = widest(table) - max_width
    longest = max(cell_len(s["name"]) for s in steps)
    if over > 0 and longest > 8:
        keep = max(8, longest - over)
        steps = [{**s, "name": s["name"] if cell_len(s["name"]) <= keep
                  else set_cell_size(s["name"], keep - 1).rstrip() + "…"} for s in steps]
        table = step_table(steps, 0)
    return table


def render_view(snap: Snapshot, max_lines: int | None = None,
                max_width: int | None = None) -> str:
    """The live view (and, with `final`, the summary left on the screen). With
    max_lines (a terminal's height), a table that would not fit shows the steps with
    work and folds the others into one line, so the view is never cut; with
    max_width, the table is narrowed to fit (fitted_table)."""
    wf = snap.workflow
    head = (f"Workflow {wf['id']} · {' '.join(str(wf['name']).split())}"
            + (" · PAUSED" if wf["paused"] else "")
            if wf else "Workflow: figures not read yet")
    # The run and model lines come first: on a terminal shorter than a long
    # workflow's table, the live view cuts rows off the bottom.
    lines = [head, run_line(snap), model_line(snap)]
    table_head = 2     # the table's header and its rule
    if snap.steps and max_lines is not None and \
            len(lines) + table_head + len(snap.steps) > max_lines:
        shown, summary = fold_steps(snap.steps, max_lines - len(lines) - table_head - 1)
        if shown:
            lines.append(fitted_table(shown, max_width))
        lines.append(summary)
    elif snap.steps:
        lines.append(fitted_table(snap.steps, max_width))
    elif snap.by_step:
        lines.append("This run's checkpoints by step: " + ", ".join(
            f"{step_label(k, 2)}: {v}" for k, v in sorted(snap.by_step.items())))
    return "\n".join(lines)


def log_record(snap: Snapshot, workflow_id: int) -> dict[str, Any]:
    """One log line's fields (JSON as is; text as key=value)."""
    t = snap.totals or {}
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "event": "run_end" if snap.final else "progress",
        "workflow": workflow_id,
        "run_id": snap.run_id,
        "status": snap.status,
        "elapsed_s": round(snap.elapsed_s, 1),
        "waves": snap.waves,
        "waves_per_s": snap.waves_per_s,
        "checkpoints": snap.checkpoints,
        "admitted": snap.admitted,
        "subjects": t.get("subjects"),
        "done": t.get("done"),
        "active": t.get("active"),
        "dead": t.get("dead"),
        "eta_s": t.get("eta_s"),
        "model": snap.model,
        "tokens_per_s": snap.tokens_per_s,
        "steps": [{"step": s["step"], "name": s["name"], "done": s["done"],
                   "of": s["reached"], "state": s["state"]} for s in snap.steps],
    }


def log_text(record: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return "-" if v is None else str(v)

    steps = ",".join(f"{s['step']}:{s['done']}/{s['of']}" for s in record["steps"]) or "-"
    head = f"{record['time']} interp {record['event']}"
    keys = ("workflow", "run_id", "status", "elapsed_s", "waves", "waves_per_s", "checkpoints",
            "admitted", "done", "subjects", "active", "dead", "eta_s", "model", "tokens_per_s")
    fields = " ".join(f"{k}={value(record[k])}" for k in keys)
    return f"{head} {fields} steps={steps}"


class View(Protocol):
    def show(self, snap: Snapshot) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self, snap: Snapshot) -> None: ...


class LogView:
    """One line per snapshot on a stream, as text or JSON."""

    def __init__(self, stream: IO[str], workflow_id: int, fmt: str = "text"):
        self.stream, self.workflow_id, self.fmt = stream, workflow_id, fmt

    def show(self, snap: Snapshot) -> None:
        record = log_record(snap, self.workflow_id)
        line = json.dumps(record, default=str) if self.fmt == "json" else log_text(record)
        self.write(line)

    def note(self, message: str) -> None:
        if self.fmt == "json":
            self.write(json.dumps({"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                   "event": "progress_error", "message": message}))
        else:
            self.write(message)

    def finish(self, snap: Snapshot) -> None:
        self.show(snap)

    def write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):   # a closed pipe must not stop the run
            pass


class LiveView:
    """The terminal view: redrawn in place by rich, replaced by the final summary at the end."""

    def __init__(self, stream: IO[str], console: Any = None):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(file=stream)
        # Transient: at the end the live region is erased and the final summary
        # printed in full, so a table taller than the terminal is not left cropped.
        self.live = Live(console=self.console, auto_refresh=False, transient=True,
                         redirect_stdout=True, redirect_stderr=True)
        self.live.start()
        self.handlers = route_log_handlers(stream, sys.stderr)

    def show(self, snap: Snapshot) -> None:
        from rich.text import Text

        size = self.console.size
        self.live.update(Text(render_view(snap, max_lines=size.height, max_width=size.width),
                              no_wrap=True, overflow="ellipsis"), refresh=True)

    def note(self, message: str) -> None:
        self.live.console.print(message, markup=False, highlight=False)

    def finish(self, snap: Snapshot) -> None:
        self.stop()
        self.console.print(render_view(snap), markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        """Leave the terminal as it was (cursor shown, log lines to the terminal again)."""
        self.live.stop()
        for handler, stream in self.handlers:
            handler.setStream(stream)
        self.handlers = []


def route_log_handlers(old: IO[str], new: IO[str]) -> list[tuple[logging.StreamHandler[Any],
                                                                  IO[str]]]:
    """Points the root logger's handlers that write to `old` at `new`; returns how to undo it.

    While a live view runs, its proxy for stderr prints a log line above the view;
    the handler set up before the view started would write into the middle of it."""
    moved = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old and old is not new:
            handler.setStream(new)
            moved.append((handler, old))
    return moved


class ProgressReporter:
    """A daemon thread that shows a snapshot every `every_s` seconds until the run ends."""

    def __init__(self, source: ProgressSource, view: View, every_s: float):
        self.source, self.view, self.every_s = source, view, every_s
        self.stopping = threading.Event()
        self.source.on_error = self.note
        self.thread = threading.Thread(target=self.loop, name="progress", daemon=True)

    def start(self) -> ProgressReporter:
        self.thread.start()
        return self

    def loop(self) -> None:
        while True:
            try:
                snap = self.source.snapshot()
                if not self.stopping.is_set():   # else the final summary is being drawn
                    self.view.show(snap)
            except Exception as exc:  # noqa: BLE001 - drawing must never stop the run
                self.source.report_once(exc, "draw the progress")
            if self.stopping.wait(self.every_s):
                return

    def note(self, message: str) -> None:
        try:
            self.view.note(message)
        except Exception:  # noqa: BLE001
            log.warning("%s", message)

    def stop(self, run_ended: bool = True) -> None:
        """Stops the thread, then shows the final summary (from the database unless the
        run failed: then from what was last read, so a lost database is not waited for)."""
        self.stopping.set()
        self.thread.join(timeout=CONNECT_TIMEOUT_S + READ_TIMEOUT_MS / 1000)
        # A thread still inside a read owns the connection: do not read beside it.
        read_db = run_ended and not self.thread.is_alive()
        try:
            self.view.finish(self.source.snapshot(final=True, read_db=read_db))
        except Exception as exc:  # noqa: BLE001
            log.warning("progress: cannot show the final summary (%s)", first_line(exc))
            if isinstance(self.view, LiveView):
                self.view.stop()
        if not self.thread.is_alive():
            self.source.close()

    def abandon(self) -> None:
        """Stops drawing for a process that leaves at once (no final summary, no
        database read): a live view gives the terminal back as it was."""
        self.stopping.set()
        if isinstance(self.view, LiveView):
            try:
                self.view.stop()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass


def start_reporter(dsn: str, workflow_id: int, run: RunLike, *, live: bool, stream: IO[str],
                   every_s: float, log_format: str) -> ProgressReporter:
    """Starts showing a run's progress on `stream`: live (a terminal, redrawn every
    LIVE_REFRESH_S) or as log lines every `every_s` seconds."""
    source = ProgressSource(dsn, workflow_id, run)
    view: View = LogView(stream, workflow_id, log_format)
    if live:
        try:
            view, every_s = LiveView(stream), LIVE_REFRESH_S
        except ImportError as exc:  # an environment installed before rich was required
            view.note(f"progress: no live view ({first_line(exc)}); logging instead")
    return ProgressReporter(source, view, every_s).start()


__all__ = ["LiveView", "LogView", "ProgressReporter", "ProgressSource", "Snapshot",
           "log_record", "log_text", "model_tokens_per_s", "render_view", "start_reporter"]
