"""Operator verbs: retry, rewind, cancel (interpreter/operator_actions.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .context import emit_json


def _selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every verb shares: the workflow, the selection, and how to act."""
    options = [
        click.option("--workflow", "workflow_id", required=True, type=int, help="Workflow id."),
        click.option("--subject", "subjects", multiple=True, metavar="ID",
                     help="These subjects (repeat the option, or give ids comma-separated)."),
        click.option("--step", type=int, default=None,
                     help="Subjects whose current step is STEP."),
        click.option("--outcome-at", default=None, metavar="STEP=OUTCOME",
                     help="Subjects whose latest successful checkpoint at STEP had OUTCOME."),
        click.option("--error-like", default=None, metavar="TEXT",
                     help="Subjects whose last error matches TEXT (ILIKE; without a % it "
                          "matches anywhere in the error)."),
        click.option("--status", "statuses", multiple=True,
                     metavar="ready|leased|done|dead|cancelled",
                     help="Subjects in these statuses (repeat, or comma-separated)."),
        click.option("--where", default=None, metavar="SQL",
                     help="A predicate over the workflow's subject table (alias t), run "
                          "read-only with a time limit, before anything changes."),
        click.option("--where-timeout", default=60.0, show_default=True,
                     type=click.FloatRange(min=0, min_open=True),
                     help="Seconds the --where predicate may run."),
        click.option("--all", "everything", is_flag=True,
                     help="Every subject the verb applies to (when no other selection)."),
        click.option("--reason", default=None, metavar="TEXT",
                     help="Why (recorded with the action; required unless --dry-run)."),
        click.option("--dry-run", is_flag=True,
                     help="Print the count and a sample of the subjects; change nothing."),
        click.option("--sample", default=10, show_default=True, type=click.IntRange(0, 1000),
                     help="How many subject ids to show."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run(obj: Any, verb: str, kw: dict[str, Any], to_step: int | None = None) -> None:
    from ..operator_actions import (
        Selection,
        act,
        describe,
        given_text,
        parse_outcome_at,
        parse_statuses,
        parse_subjects,
    )

    outcome_at = given_text("--outcome-at", kw["outcome_at"])
    selection = Selection(
        subjects=parse_subjects(kw["subjects"]), step=kw["step"],
        outcome_at=parse_outcome_at(outcome_at) if outcome_at else None,
        error_like=given_text("--error-like", kw["error_like"]),
        statuses=parse_statuses(kw["statuses"]),
        where=given_text("--where", kw["where"]), everything=kw["everything"])
    result = act(obj.db, verb, kw["workflow_id"], selection, reason=kw["reason"],
                 to_step=to_step, dry_run=kw["dry_run"], sample=kw["sample"],
                 where_timeout_s=kw["where_timeout"])
    if kw["as_json"]:
        emit_json(result)
    else:
        click.echo(describe(result))


@click.command("retry")
@_selection_options
@click.pass_obj
def retry(obj: Any, **kw: Any) -> None:
    """Send dead letters back to the queue at the step where they died, attempts reset.

    Without a selection, every dead letter of the workflow. Cancelled subjects
    come back only when asked for (--status cancelled). A subject held by a
    running wave is skipped and counted, never moved under it. The action is
    recorded in interp.operator_actions with the reason (docs/ops.md).

    Example:

        interp retry --workflow 3001 --error-like 'timed out' --reason "server back up"
    """
    _run(obj, "retry", kw)


@click.command("rewind")
@click.option("--to-step", required=True, type=int, help="The step the subjects go back to.")
@_selection_options
@click.pass_obj
def rewind(obj: Any, to_step: int, **kw: Any) -> None:
    """Send subjects (done, dead, cancelled or waiting) back to a step.

    The step runs again for them (a gate is evaluated again), then the steps
    after it. History stays: the new checkpoints continue the subject's visit
    numbering. Effects of later steps are not undone (docs/ops.md shows a SQL
    actor that a rewind can run again safely). A subject held by a running wave
    is skipped and counted.

    Example:

        interp rewind --workflow 3001 --to-step 12 --outcome-at 20=UNCLEAR --dry-run
    """
    _run(obj, "rewind", kw, to_step=to_step)


@click.command("cancel")
@_selection_options
@click.pass_obj
def cancel(obj: Any, **kw: Any) -> None:
    """Stop subjects where they are (status cancelled: not dead, not done).

    No worker claims a cancelled subject; `interp retry --status cancelled` or
    `interp rewind` brings it back. A subject held by a running wave is
    skipped and counted.

    Example:

        interp cancel --workflow 3001 --step 12 --status ready --reason "bad batch of postings"
    """
    _run(obj, "cancel", kw)
