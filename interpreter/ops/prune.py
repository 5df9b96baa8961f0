"""`interp prune`: maintenance, not monitoring. Deletes a workflow's old
checkpoints of ended subjects (keeping the last per subject and step), the
prompts they leave unused, and its timeline (lane intervals, hardware samples)
older than a cutoff, a chunk per short transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg

from ..db import Database, one
from ..errors import InterpError
from ..queries import Q
from .status import workflow_row


def prune(db: Database, workflow_id: int, older_than: dt.timedelta, batch_size: int = 5000,
          dry_run: bool = False, pause_s: float = 0.0,
          progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Delete old checkpoints of ended subjects, keeping the last per (subject, step),
    and the workflow's timeline (lane intervals, hardware samples) older than the cutoff.

    Walks the ended subjects in key order, a chunk per short transaction, and
    sizes the chunks so that each deletes about `batch_size` rows; a running
    workflow's subjects are never touched (they are not done/dead).
    """
    if batch_size < 1:
        raise InterpError("--batch-size must be at least 1")
    db.run(lambda conn: workflow_row(conn, workflow_id))
    cutoff = db.run(lambda conn: one(conn.execute(
        Q["prune_cutoff"], {"older_than": older_than}))["cutoff"])
    after, chunk = "", max(1, batch_size // 10)
    totals = {"workflow": workflow_id, "cutoff": cutoff.isoformat(), "dry_run": dry_run,
              "batch_size": batch_size, "subjects_scanned": 0, "batches": 0,
              "candidates": 0, "deleted": 0, "prompts_deleted": 0}
    started = time.monotonic()
    while True:
        params = {"wf": workflow_id, "after": after, "subjects": chunk, "cutoff": cutoff,
                  "delete": not dry_run}
        row = db.run(partial(_prune_batch, params=params))
        if row["subjects"] == 0:
            break
        totals["batches"] += 1
        totals["subjects_scanned"] += row["subjects"]
        totals["candidates"] += row["candidates"]
        totals["deleted"] += row["deleted"]
        totals["prompts_deleted"] += row["prompts_deleted"]
        after = row["last_subject"]
        per_subject = max(row["candidates"] / row["subjects"], 0.05)
        chunk = int(max(1, min(batch_size / per_subject, chunk * 4, 50_000)))
        if progress:
            progress(totals)
        if pause_s:
            time.sleep(pause_s)
    if not dry_run and totals["deleted"]:
        db.run(lambda conn: conn.execute(Q["prune_compact_rollups"]))
    totals.update(prune_timeline(db, workflow_id, cutoff, batch_size=batch_size,
                                 dry_run=dry_run))
    if not dry_run and (totals["deleted"] or totals["intervals_deleted"]
                        or totals["samples_deleted"]):
        db.run(lambda conn: conn.execute(Q["prune_analyze"]))
    totals["seconds"] = round(time.monotonic() - started, 3)
    totals["rows_per_s"] = (round(totals["candidates"] / totals["seconds"])
                            if totals["seconds"] > 0 else None)
    return totals


def _prune_batch(conn: psycopg.Connection[Any], *, params: dict[str, Any]) -> dict[str, Any]:
    """One chunk of prune, and the prompts its deleted checkpoints leave unused, in
    one transaction."""
    row = dict(conn.execute(Q["prune_batch"], params).fetchone() or {})
    shas = row.pop("prompts") or []
    row["prompts_deleted"] = (conn.execute(Q["prune_prompts"], {"shas": shas}).rowcount
                              if shas else 0)
    return row


def prune_timeline(db: Database, workflow_id: int, cutoff: dt.datetime, *, batch_size: int = 5000,
                   dry_run: bool = False) -> dict[str, int]:
    """Deletes a workflow's lane intervals that ended, and hardware samples taken,
    before cutoff, a batch per short transaction (a dry run only counts them)."""
    totals = {"intervals_candidates": 0, "intervals_deleted": 0, "samples_candidates": 0,
              "samples_deleted": 0}
    for table, query in (("intervals", Q["timeline_prune_intervals"]),
                         ("samples", Q["timeline_prune_samples"])):
        limit = 2**31 - 1 if dry_run else batch_size
        while True:
            params = {"wf": workflow_id, "cutoff": cutoff, "limit": limit, "delete": not dry_run}
            row = db.run(partial(_count_or_delete, query=query, params=params))
            totals[f"{table}_candidates"] += row["candidates"]
            totals[f"{table}_deleted"] += row["deleted"]
            if dry_run or row["candidates"] < limit:
                break
    return totals


def _count_or_delete(conn: psycopg.Connection[Any], *, query: str,
                     params: dict[str, Any]) -> dict[str, Any]:
    return one(conn.execute(query, params))
