"""`interp experiment ...`: try a template, model or sampling on recorded subjects.

The commands call interpreter/experiments.py; docs/changing-a-pipeline.md walks
the loop (try, compare, publish, rewind, watch) and ADR 0006 explains why an
experiment cannot change production.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ..errors import DefinitionError
from .context import Context, emit_json


@click.group()
def experiment() -> None:
    """Try a prompt template, a model or sampling settings on subjects that already
    passed a model step, and compare the results with production's.

    An experiment writes only interp.experiments and interp.experiment_results:
    no effects, no transitions, no change to any subject.

    Example:

        interp experiment run --workflow 3001 --step 12 --template 3001_skills@2 --sample 20
    """


def _sampling(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"--sampling is not JSON: {exc.msg} at char {exc.pos}") from None
    if not isinstance(value, dict):
        raise DefinitionError("--sampling must be a JSON object, e.g. '{\"temperature\": 0}'")
    return value


@experiment.command("run")
@click.option("--workflow", "workflow_id", type=int, required=True, help="Workflow id.")
@click.option("--step", type=int, required=True, help="The model step to try (execution_order).")
@click.option("--template", help="A template version to try: NAME@VERSION (or NAME: its newest).")
@click.option("--template-file", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                        path_type=Path),
              help="A template's source to try, from a file ('-': stdin).")
@click.option("--model", help="A model of interp.models to run the step with instead.")
@click.option("--sampling", "sampling_json", help="Sampling settings over the step's, as JSON.")
@click.option("--sample", type=click.IntRange(1), default=10, show_default=True,
              help="How many subjects that passed the step to try.")
@click.option("--subject", "subjects", multiple=True,
              help="Try these subjects instead of a sample (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Picks the sample: the same seed picks the same subjects.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for the model "
              "[default: half the CPUs].")
@click.option("--nice", type=click.IntRange(0, 19), default=10, show_default=True,
              help="Lower this process's CPU priority by this much, below production's.")
@click.option("--wait-for-production", is_flag=True,
              help="Between waves, wait while a running production run generates with the "
                   "same model (for a shared GPU, where nice does not apply).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_obj
def experiment_run(ctx: Context, workflow_id: int, step: int, template: str | None,
                   template_file: Path | None, model: str | None, sampling_json: str | None,
                   sample: int, subjects: tuple[str, ...], seed: int, threads: int | None,
                   nice: int, wait_for_production: bool, as_json: bool) -> None:
    """Run a model step with a change on subjects that passed it, from the inputs it
    saw, through the step's own validation, re-asks and outcome rule; then print
    the comparison with production (as `interp experiment show` does).

    Sampling seeds are production's own (derived from workflow, subject and step)
    unless --sampling pins one, so replaying production's template and model at
    temperature 0 measures how many outputs come out identical.

    Example:

        interp experiment run --workflow 3001 --step 12 --template-file skills.j2 --sample 10
    """
    from ..config import choose_database
    from ..db import Database
    from ..experiments import (
        ExperimentSpec,
        compare,
        default_threads,
        format_report,
        lower_priority,
        run_experiment,
    )

    if template_file is not None and str(template_file) == "-":
        body: str | None = sys.stdin.read()
    else:
        body = template_file.read_text(encoding="utf-8") if template_file else None
    spec = ExperimentSpec(workflow_id, step, template=template, template_body=body,
                          template_file=str(template_file) if template_file else None,
                          model=model, sampling=_sampling(sampling_json), sample=sample,
                          subjects=subjects or None, seed=seed)
    ctx.migrate_if_needed()
    lower_priority(nice)
    # Its own sessions, named so that pg_stat_activity (and an audit) tells them apart.
    db = Database(choose_database(ctx.dsn_option), application_name="interp-experiment")

    def progress(done: int, total: int) -> None:
        click.echo(f"experiment: {done}/{total} subjects", err=True)

    experiment_id = run_experiment(db, spec, n_threads=threads or default_threads(),
                                   wait_for_production=wait_for_production, progress=progress)
    report = db.run(lambda c: compare(c, experiment_id))
    db.close()
    if as_json:
        emit_json(report)
    else:
        click.echo(format_report(report))


@experiment.command("show")
@click.argument("experiment_id", type=int)
@click.option("--differences", type=click.IntRange(0), default=3, show_default=True,
              help="How many differing outputs to show side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def experiment_show(ctx: Context, experiment_id: int, differences: int, as_json: bool) -> None:
    """Compare an experiment with what production recorded for the same subjects:
    the outcome confusion table, the schema-valid rate, re-asks, tokens and time
    per subject, how many outputs are identical, and the first differing outputs.

    Example:

        interp experiment show 7 --json | jq .identical
    """
    from ..experiments import compare, format_report

    report = ctx.db.run(lambda c: compare(c, experiment_id, differences=differences))
    if as_json:
        emit_json(report)
    else:
        click.echo(format_report(report))


@experiment.command("list")
@click.option("--workflow", "workflow_id", type=int, help="Only this workflow's experiments.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def experiment_list(ctx: Context, workflow_id: int | None, limit: int, as_json: bool) -> None:
    """List experiments, newest first: what each changed, on which step, by whom.

    Example:

        interp experiment list --workflow 3001
    """
    from ..experiments import list_experiments

    rows = ctx.db.run(lambda c: list_experiments(c, workflow_id, limit))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        r["changes"] = json.dumps(r["changes"], sort_keys=True)
    click.echo(tabulate(rows, headers="keys"))
