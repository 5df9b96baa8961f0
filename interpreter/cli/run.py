"""`interp run`, `interp pause`, `interp resume`: drive workflows.

The run options' defaults are the engine's (`RunOptions`), so the command line
and the library cannot drift apart. While a run runs, its progress goes to
stderr (interpreter/ops/progress.py): a live view on a terminal, log lines
otherwise; stdout keeps only what `--json` asks for.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import NoReturn

import click

from ..db import DEFAULT_DB_TIMEOUT_S
from ..engine import Runner, RunOptions, RunSummary
from ..ops.progress import ProgressReporter, start_reporter
from .context import Context

DEFAULTS = RunOptions()


@click.command("run")
@click.option("--workflow", "workflow_id", type=int, required=True, help="Workflow id.")
@click.option("--limit", type=click.IntRange(0),
              help="Admit at most N new subjects in this run, at its start and later "
                   "admissions together.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=DEFAULTS.batch_size,
              show_default=True, help="Subjects per wave for gates, SQL and script steps.")
@click.option("--model-batch-size", type=click.IntRange(1, 10_000),
              default=DEFAULTS.model_batch_size, show_default=True,
              help="Subjects per wave for model steps.")
@click.option("--until-idle", is_flag=True, help="Exit when no work is left.")
@click.option("--worker-id", help="Name this worker (default: host:pid:random).")
@click.option("--lease", "lease_s", type=click.FloatRange(1), default=DEFAULTS.lease_s,
              show_default=True, help="Lease length in seconds; renewed by a heartbeat.")
@click.option("--poll", "poll_s", type=click.FloatRange(0.01), default=DEFAULTS.poll_s,
              show_default=True, help="Seconds between polls when idle.")
@click.option("--admit-every", "admit_every_s", type=click.FloatRange(0.01),
              default=DEFAULTS.admit_every_s,
              help="Seconds between admissions of new subjects, backlog or not (one "
                   "worker per workflow admits at a time) [default: --poll].")
@click.option("--switch-ratio", type=click.FloatRange(1), default=DEFAULTS.switch_ratio,
              show_default=True, help="Switch models only for a backlog this many times larger.")
@click.option("--db-timeout", type=click.FloatRange(1), default=DEFAULT_DB_TIMEOUT_S,
              show_default=True,
              help="Give up (exit 2) after the database is unreachable this long.")
@click.option("--model-memory-mb", type=click.IntRange(1), default=DEFAULTS.model_memory_mb,
              show_default=True, help="Memory budget for resident models.")
@click.option("--priority-at-least", type=int, default=DEFAULTS.priority_at_least,
              help="Take only subjects of at least this priority (a worker for urgent "
                   "work) [default: any].")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--progress-every", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds between progress log lines (when not on a terminal).")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="Progress as log lines in this format, even on a terminal "
                   "[default: a live view on a terminal, else text].")
@click.option("--quiet", "-q", is_flag=True, help="Show no progress, only the final summary.")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this port while running (0: any free port).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address the metrics server listens on.")
@click.pass_obj
def run(ctx: Context, workflow_id: int, limit: int | None, batch_size: int, model_batch_size: int,
        until_idle: bool, worker_id: str | None, lease_s: float, poll_s: float,
        admit_every_s: float | None, switch_ratio: float, db_timeout: float,
        model_memory_mb: int, as_json: bool,
        progress_every: float, log_format: str | None, quiet: bool,
        metrics_port: int | None, metrics_addr: str, priority_at_least: int | None) -> None:
    """Run a workflow: admit subjects, then drive them through the steps in waves.

    SIGTERM or Ctrl-C finishes or releases the current wave, then exits 0; a
    second one gives this worker's leases back and exits 130 at once.
    Several `interp run` processes may share one workflow.

    Progress goes to stderr: on a terminal a live view (steps done/total, the
    model lane's model and tokens/s, waves/s, ETA) redrawn every second and
    left as a summary at the end; otherwise one log line every
    --progress-every seconds (--log-format json for machines); --quiet for
    neither.

    New rows are admitted every --admit-every seconds (default --poll)
    while the run works, so they need not wait for a backlog; --limit caps
    all of a run's admissions together.

    Subjects are claimed highest priority first (an entry point's `priority`
    column); with --priority-at-least N this worker takes only those of
    priority N or more.

    With --metrics-port, the database's metrics (all workflows) are served
    for Prometheus at http://ADDR:PORT/metrics while the run lasts.

    Example:

        interp run --workflow 3001 --until-idle --batch-size 200
    """
    ctx.db.db_timeout = db_timeout
    ctx.migrate_if_needed()
    stop = threading.Event()

    runner: Runner | None = None
    reporter: ProgressReporter | None = None

    def on_signal(signum, frame):  # noqa: ARG001
        if stop.is_set():
            _leave_now(runner, reporter)  # a second Ctrl-C: give the leases back, exit 130
        # sys.stderr looked up now: during a live view it is the view's proxy, which
        # prints the line above the view instead of into it.
        click.echo(f"stopping after the current wave ({signal.Signals(signum).name}); "
                   "again to leave at once", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    opts = RunOptions(batch_size=batch_size, model_batch_size=model_batch_size, limit=limit,
                      until_idle=until_idle, worker_id=worker_id, lease_s=lease_s, poll_s=poll_s,
                      admit_every_s=admit_every_s,
                      switch_ratio=switch_ratio, model_memory_mb=model_memory_mb,
                      priority_at_least=priority_at_least)
    runner = Runner(ctx.db, workflow_id, opts, stop=stop)
    metrics = _start_metrics(ctx, metrics_addr, metrics_port)
    reporter = None if quiet else _start_progress(ctx, workflow_id, runner, progress_every,
                                                  log_format)
    ended = False
    try:
        summary = runner.run()
        ended = True
    finally:
        if reporter is not None and not runner.run_id:
            # Refused before it started (an invalid definition): the error's one line
            # is all there is to say, no progress summary of a run that never was.
            reporter.abandon()
        elif reporter is not None:
            reporter.stop(run_ended=ended)
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
    _print_summary(summary, as_json)


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    """The run's totals: JSON on stdout with --json, else one line on stderr."""
    if as_json:
        click.echo(json.dumps({
            "run_id": summary.run_id, "worker_id": summary.worker_id, "status": summary.status,
            "admitted": summary.admitted, "waves": summary.waves,
            "checkpoints": summary.checkpoints, "model_loads": summary.model_loads,
            "model_switches": summary.model_switches,
            "by_step": {str(k): v for k, v in sorted(summary.by_step.items())}}, indent=2))
        return
    click.echo(f"run {summary.run_id} {summary.status}: {summary.admitted} admitted, "
               f"{summary.checkpoints} checkpoints in {summary.waves} waves, "
               f"{summary.model_loads} model loads, {summary.model_switches} switches",
               err=True)


# A second signal gives the leases back within about this long, then exits
# whether the database answered or not (unanswered, the leases expire).
RELEASE_TIMEOUT_S = 2.0


def _leave_now(runner: Runner | None, reporter: ProgressReporter | None) -> NoReturn:
    """Exits 130 at once: no wave is finished or waited for. This worker's leased
    waves go back to ready first (no attempt counted) and the run is recorded as
    stopped, so other workers need not wait for the leases to expire."""
    released = runner.release_all(RELEASE_TIMEOUT_S) if runner is not None else 0
    if reporter is not None:
        reporter.abandon()
    if released is None:
        note = "the database did not answer; its leases expire in --lease seconds"
    else:
        note = f"{released} leased subject(s) given back"
    click.echo(f"leaving at once ({note})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit, not sys.exit: SystemExit would unwind through the run's cleanup,
    # which joins the lanes, and a lane may be inside a long call.
    os._exit(130)


def _on_a_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def _start_progress(ctx: Context, workflow_id: int, runner: Runner, every_s: float,
                    log_format: str | None) -> ProgressReporter:
    live = log_format is None and _on_a_terminal()
    return start_reporter(ctx.db.dsn, workflow_id, runner, live=live, stream=sys.stderr,
                          every_s=every_s, log_format=log_format or "text")


def _start_metrics(ctx: Context, addr: str, port: int | None):
    """The metrics server for this run, or None without --metrics-port."""
    if port is None:
        return None
    from ..ops.metrics import serve_metrics

    server, url = serve_metrics(ctx.db, addr, port)
    click.echo(f"metrics on {url}", err=True)
    return server


def _set_paused(ctx: Context, workflow_id: int, paused: bool) -> None:
    from ..admin import set_paused

    ctx.db.run(lambda c: set_paused(c, workflow_id, paused))


@click.command("pause")
@click.argument("workflow_id", type=int)
@click.pass_obj
def pause(ctx: Context, workflow_id: int) -> None:
    """Pause a workflow: running workers stop claiming after their current wave.

    Example:

        interp pause 3001
    """
    _set_paused(ctx, workflow_id, True)
    click.echo(f"workflow {workflow_id} paused", err=True)


@click.command("resume")
@click.argument("workflow_id", type=int)
@click.pass_obj
def resume(ctx: Context, workflow_id: int) -> None:
    """Resume a paused workflow.

    Example:

        interp resume 3001
    """
    _set_paused(ctx, workflow_id, False)
    click.echo(f"workflow {workflow_id} resumed", err=True)
