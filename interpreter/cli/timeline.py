"""`interp timeline`: the model lane's intervals as a table, for people without a browser."""

from __future__ import annotations

from typing import Any

import click

from ..errors import InterpError
from .context import emit_json


@click.command("timeline")
@click.option("--workflow", "workflow_id", required=True, type=int, help="Workflow id.")
@click.option("--since", default="1h", show_default=True,
              help="How far back: 90s, 45m, 1h, 2d.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: intervals, hardware samples and markers.")
@click.pass_obj
def timeline(obj: Any, workflow_id: int, since: str, as_json: bool) -> None:
    """What the model lane did, moment by moment: generating (model, step,
    subjects), loading or switching a model, waiting for a claim, held back by a
    breaker, waiting on a commit, idle, paused. Model switches, breaker
    openings and pauses follow as markers, then the share of lane time by cause
    (docs/ops.md, "Timeline").

    Example:

        interp timeline --workflow 3001 --since 1h
    """
    from ..ops.figures import parse_age
    from ..ops.timeline import lane_line, lane_time, render_timeline, timeline_data

    age = parse_age(since).total_seconds()
    if age <= 0:
        raise InterpError("--since must be more than 0")
    data = obj.db.run(lambda conn: timeline_data(conn, workflow_id, age))
    if as_json:
        emit_json(data)
        return
    share = obj.db.run(lambda conn: lane_time(conn, workflow_id, age))
    click.echo(render_timeline(data))
    click.echo(lane_line(share) or "lane: no lane time recorded in this window")
