"""`interp workflow ...`: list, show, validate and export workflow definitions."""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate

from ..errors import DefinitionError
from .context import Context


@click.group()
def workflow() -> None:
    """List, show, validate and export workflow definitions.

    Example:

        interp workflow show 3001 --format mermaid
    """


@workflow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def workflow_list(ctx: Context, as_json: bool) -> None:
    """List the workflows in the database.

    Example:

        interp workflow list --json
    """
    from ..definitions import list_workflows

    rows = ctx.db.run(list_workflows)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(tabulate(rows, headers="keys"))


def _load(ctx: Context, workflow_id: int) -> Any:
    from ..definitions import load_workflow

    return ctx.db.run(lambda c: load_workflow(c, workflow_id))


@workflow.command("show")
@click.argument("workflow_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "mermaid", "dot"]),
              default="text", show_default=True)
@click.pass_obj
def workflow_show(ctx: Context, workflow_id: int, fmt: str) -> None:
    """Show a workflow's steps and transitions, or draw it as Mermaid or dot.

    Example:

        interp workflow show 3001 --format dot | dot -Tsvg > 3001.svg
    """
    from ..ops.export import dot, mermaid

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
def workflow_validate(ctx: Context, workflow_id: int) -> None:
    """List every problem in a workflow definition; exit 1 if there is any.

    Example:

        interp workflow validate 3001
    """
    from ..definitions import load_workflow
    from ..validate import validate_workflow, validation_warnings

    def check(c: Any) -> tuple[list[str], list[str]]:
        wf = load_workflow(c, workflow_id)
        return validate_workflow(c, wf), validation_warnings(c, wf)

    problems, warnings = ctx.db.run(check)
    for p in problems:
        click.echo(f"problem: {p}")
    # Warnings never make a definition invalid (a run ignores them): they point at
    # something that works but probably does not do what the author meant.
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if problems:
        raise DefinitionError(f"workflow {workflow_id} has {len(problems)} problem(s)")
    click.echo(f"workflow {workflow_id} is valid", err=True)


@workflow.command("export")
@click.argument("workflow_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file.")
@click.pass_obj
def workflow_export(ctx: Context, workflow_id: int, output: str | None) -> None:
    """Write a workflow as a seed file that loads back to the same definition.

    Example:

        interp workflow export 3001 -o seeds/3001_job_pipeline.sql
    """
    from ..definitions import load_workflow
    from ..ops.export import export_workflow

    text = ctx.db.run(lambda c: export_workflow(c, load_workflow(c, workflow_id)))
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)
