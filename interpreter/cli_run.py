"""Commands that define and drive workflows: workflow, run, pause, resume."""

from __future__ import annotations

import json
import signal
import sys
import threading

import click
from tabulate import tabulate

from .errors import DefinitionError


@click.group()
def workflow() -> None:
    """List, show, validate and export workflow definitions.

    Example:

        interp workflow show 3001 --format mermaid
    """


@workflow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def workflow_list(ctx, as_json: bool) -> None:
    """List the workflows in the database.

    Example:

        interp workflow list --json
    """
    from .definitions import list_workflows

    rows = ctx.db.run(list_workflows)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(tabulate(rows, headers="keys"))


def _load(ctx, workflow_id: int):
    from .definitions import load_workflow

    return ctx.db.run(lambda c: load_workflow(c, workflow_id))


@workflow.command("show")
@click.argument("workflow_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "mermaid", "dot"]),
              default="text", show_default=True)
@click.pass_obj
def workflow_show(ctx, workflow_id: int, fmt: str) -> None:
    """Show a workflow's steps and transitions, or draw it as Mermaid or dot.

    Example:

        interp workflow show 3001 --format dot | dot -Tsvg > 3001.svg
    """
    from .export import dot, mermaid

    wf = _load(ctx, workflow_id)
    if fmt == "mermaid":
        click.echo(mermaid(wf), nl=False)
        return
    if fmt == "dot":
        click.echo(dot(wf), nl=False)
        return
    steps = []
    for n, s in sorted(wf.steps.items()):
        actor = wf.actors.get(s.actor or "")
        nexts = ", ".join(f"{o}->{'end' if t is None else t}"
                          for o, t in sorted(wf.transitions.get(n, {}).items()))
        steps.append({"step": n, "name": s.name, "kind": s.kind,
                      "actor": f"{actor.kind}:{actor.name}" if actor else "",
                      "model": (wf.model_of(s).name if wf.model_of(s) else ""),
                      "template": s.template or "", "next": nexts})
    if fmt == "json":
        click.echo(json.dumps({"workflow_id": wf.id, "name": wf.name, "version": wf.version,
                               "paused": wf.paused, "subject_table": wf.subject_table,
                               "subject_key": wf.subject_key, "steps": steps,
                               "entry_points": [ep.__dict__ for ep in wf.entry_points]},
                              indent=2))
        return
    click.echo(f"Workflow {wf.id}: {wf.name} (version {wf.version}"
               f"{', paused' if wf.paused else ''}) over {wf.subject_table}.{wf.subject_key}")
    click.echo(tabulate(steps, headers="keys"))


@workflow.command("validate")
@click.argument("workflow_id", type=int)
@click.pass_obj
def workflow_validate(ctx, workflow_id: int) -> None:
    """List every problem in a workflow definition; exit 1 if there is any.

    Example:

        interp workflow validate 3001
    """
    from .definitions import load_workflow
    from .validate import validate_workflow

    problems = ctx.db.run(lambda c: validate_workflow(c, load_workflow(c, workflow_id)))
    for p in problems:
        click.echo(f"problem: {p}")
    if problems:
        raise DefinitionError(f"workflow {workflow_id} has {len(problems)} problem(s)")
    click.echo(f"workflow {workflow_id} is valid", err=True)


@workflow.command("export")
@click.argument("workflow_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file.")
@click.pass_obj
def workflow_export(ctx, workflow_id: int, output: str | None) -> None:
    """Write a workflow as a seed file that loads back to the same definition.

    Example:

        interp workflow export 3001 -o seeds/3001_job_pipeline.sql
    """
    from .definitions import load_workflow
    from .export import export_workflow

    text = ctx.db.run(lambda c: export_workflow(c, load_workflow(c, workflow_id)))
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)


@click.command("run")
@click.option("--workflow", "workflow_id", type=int, required=True, help="Workflow id.")
@click.option("--limit", type=click.IntRange(0), help="Admit at most N new subjects.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Subjects per wave for gates, SQL and script steps.")
@click.option("--model-batch-size", type=click.IntRange(1, 10_000), default=8,
              show_default=True, help="Subjects per wave for model steps.")
@click.option("--until-idle", is_flag=True, help="Exit when no work is left.")
@click.option("--worker-id", help="Name this worker (default: host:pid:random).")
@click.option("--lease", "lease_s", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Lease length in seconds; renewed by a heartbeat.")
@click.option("--poll", "poll_s", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Seconds between polls when idle.")
@click.option("--switch-ratio", type=click.FloatRange(1), default=4.0, show_default=True,
              help="Switch models only for a backlog this many times larger.")
@click.option("--db-timeout", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Give up (exit 2) after the database is unreachable this long.")
@click.option("--model-memory-mb", type=click.IntRange(1), default=4096, show_default=True,
              help="Memory budget for resident models.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.pass_obj
def run(ctx, workflow_id: int, limit: int | None, batch_size: int, model_batch_size: int,
        until_idle: bool, worker_id: str | None, lease_s: float, poll_s: float,
        switch_ratio: float, db_timeout: float, model_memory_mb: int, as_json: bool) -> None:
    """Run a workflow: admit subjects, then drive them through the steps in waves.

    SIGTERM or Ctrl-C finishes or releases the current wave, then exits 0.
    Several `interp run` processes may share one workflow.

    Example:

        interp run --workflow 3001 --until-idle --batch-size 200
    """
    from .engine import Runner, RunOptions

    ctx.db.db_timeout = db_timeout
    ctx.migrate_if_needed()
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        if stop.is_set():
            sys.exit(130)  # a second Ctrl-C: leave now; leases expire and others take over
        click.echo(f"stopping after the current wave ({signal.Signals(signum).name})", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    opts = RunOptions(batch_size=batch_size, model_batch_size=model_batch_size, limit=limit,
                      until_idle=until_idle, worker_id=worker_id, lease_s=lease_s, poll_s=poll_s,
                      switch_ratio=switch_ratio, model_memory_mb=model_memory_mb)
    summary = Runner(ctx.db, workflow_id, opts, stop=stop).run()
    data = {"run_id": summary.run_id, "worker_id": summary.worker_id, "status": summary.status,
            "admitted": summary.admitted, "waves": summary.waves,
            "checkpoints": summary.checkpoints, "model_loads": summary.model_loads,
            "model_switches": summary.model_switches,
            "by_step": {str(k): v for k, v in sorted(summary.by_step.items())}}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"run {summary.run_id} {summary.status}: {summary.admitted} admitted, "
                   f"{summary.checkpoints} checkpoints in {summary.waves} waves, "
                   f"{summary.model_loads} model loads, {summary.model_switches} switches",
                   err=True)


def _set_paused(ctx, workflow_id: int, paused: bool) -> None:
    from .errors import NotFound

    n = ctx.db.run(lambda c: c.execute(
        "UPDATE interp.workflows SET paused = %s WHERE workflow_id = %s",
        (paused, workflow_id)).rowcount)
    if not n:
        raise NotFound(f"workflow {workflow_id} does not exist")


@click.command("pause")
@click.argument("workflow_id", type=int)
@click.pass_obj
def pause(ctx, workflow_id: int) -> None:
    """Pause a workflow: running workers stop claiming after their current wave.

    Example:

        interp pause 3001
    """
    _set_paused(ctx, workflow_id, True)
    click.echo(f"workflow {workflow_id} paused", err=True)


@click.command("resume")
@click.argument("workflow_id", type=int)
@click.pass_obj
def resume(ctx, workflow_id: int) -> None:
    """Resume a paused workflow.

    Example:

        interp resume 3001
    """
    _set_paused(ctx, workflow_id, False)
    click.echo(f"workflow {workflow_id} resumed", err=True)
