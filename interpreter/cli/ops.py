"""Ops commands: status, trace, dashboard, prune."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..errors import InterpError
from .context import emit_json

#: `interp status --check` exits with this when something needs a person.
CHECK_FAILED = 3


@click.command("status")
@click.option("--workflow", "workflow_id", required=True, type=int, help="Workflow id.")
@click.option("--watch", is_flag=True, help="Redraw in place until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.2),
              help="Seconds between redraws with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True,
              help=f"Exit {CHECK_FAILED} when a step is stalled, a breaker is open with "
                   "subjects waiting behind it, or there are dead letters (for cron and "
                   "alerting).")
@click.option("--stall-window", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds without a checkpoint before a step with work counts as stalled.")
@click.option("--velocity-window", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Seconds of recent checkpoints that velocity is measured over.")
@click.pass_obj
def status(obj: Any, workflow_id: int, watch: bool, interval: float, as_json: bool, check: bool,
           stall_window: float, velocity_window: float) -> None:
    """Show progress per step: done/total, a bar, velocity, ETA and state.

    States: running, waiting, idle, stalled, breaker open, limited, paused
    (docs/ops.md). Totals and the model lane (loaded model, duty cycle,
    switches) follow the table.

    Example:

        interp status --workflow 3001 --watch
    """
    from ..ops.status import render_status, status_data

    def read() -> dict[str, Any]:
        return obj.db.run(lambda conn: status_data(conn, workflow_id, stall_window,
                                                   velocity_window))

    if watch:
        tty = sys.stdout.isatty()
        try:
            while True:
                data = read()
                text = (json.dumps(data, default=str) if as_json else render_status(data))
                if tty and not as_json:
                    click.echo("\033[H\033[2J" + text, nl=True)
                else:
                    click.echo(text)
                time.sleep(interval)
        except KeyboardInterrupt:
            return
    data = read()
    if as_json:
        emit_json(data)
    else:
        click.echo(render_status(data))
    if check and not data["healthy"]:
        for alert in data["alerts"]:
            click.echo(f"check: {alert}", err=True)
        sys.exit(CHECK_FAILED)


@click.command("trace")
@click.option("--workflow", "workflow_id", required=True, type=int, help="Workflow id.")
@click.option("--subject", "subject_id", required=True, help="Subject id (e.g. a posting_id).")
@click.option("--prompts", is_flag=True,
              help="Also show the prompt each model step was asked (system and user text).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def trace(obj: Any, workflow_id: int, subject_id: str, prompts: bool, as_json: bool) -> None:
    """Every checkpoint of one subject, in order: outcomes, durations, errors, model audit.

    Example:

        interp trace --workflow 3001 --subject 42 --prompts
    """
    from ..ops.trace import render_trace, trace_data

    data = obj.db.run(lambda conn: trace_data(conn, workflow_id, subject_id, prompts=prompts))
    if as_json:
        emit_json(data)
    else:
        click.echo(render_trace(data))


@click.command("dashboard")
@click.option("--workflow", "workflow_id", type=int, default=None,
              help="Workflow to open first (default: the one with the latest activity, "
              "a checkpoint or a run).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (keep 127.0.0.1 unless you mean it).")
@click.pass_obj
def dashboard(obj: Any, workflow_id: int | None, port: int, host: str) -> None:
    """Serve a live web page (progress, velocity chart, ETA, stalls, breakers, model lane).

    The page polls a JSON API under it: /api/workflows, /api/status?workflow=ID,
    /api/velocity?workflow=ID, /api/timeline?workflow=ID&since=SECONDS.

    Example:

        interp dashboard --workflow 3001 --port 8765
    """
    from ..ops.dashboard import serve

    serve(obj.db, host=host, port=port, workflow_id=workflow_id,
          announce=lambda url: click.echo(f"dashboard on {url} (Ctrl-C stops)", err=True))


@click.command("prune")
@click.option("--workflow", "workflow_id", required=True, type=int, help="Workflow id.")
@click.option("--older-than", required=True,
              help="Age of checkpoints to delete: 30d, 12h, 45m, 2w.")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1),
              help="About how many rows each short transaction deletes.")
@click.option("--pause", "pause_s", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to sleep between batches, to go gentler on a busy server.")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def prune(obj: Any, workflow_id: int, older_than: str, batch_size: int, pause_s: float,
          dry_run: bool, as_json: bool) -> None:
    """Delete old checkpoints of subjects that have ended (done or dead), and the
    workflow's timeline (lane intervals, hardware samples) older than the cutoff.

    The last checkpoint of each (subject, step) always stays, so "did this
    posting pass step N" still has an answer; progress and velocity come from
    rollups and do not change.

    Example:

        interp prune --workflow 3001 --older-than 30d --dry-run
    """
    from ..ops.figures import parse_age
    from ..ops.prune import prune as do_prune

    age = parse_age(older_than)
    if age.total_seconds() <= 0:
        raise InterpError("--older-than must be more than 0")
    result = do_prune(obj.db, workflow_id, age, batch_size=batch_size, dry_run=dry_run,
                      pause_s=pause_s)
    if as_json:
        emit_json(result)
    else:
        verb = "would delete" if dry_run else "deleted"
        n = result["candidates"] if dry_run else result["deleted"]
        click.echo(f"{verb} {n} checkpoint(s) older than {older_than} of "
                   f"{result['subjects_scanned']} ended subject(s) in workflow {workflow_id} "
                   f"({result['batches']} batch(es), {result['seconds']}s)")
        t = "candidates" if dry_run else "deleted"
        click.echo(f"{verb} {result['intervals_' + t]} lane interval(s) and "
                   f"{result['samples_' + t]} hardware sample(s) older than {older_than}")

