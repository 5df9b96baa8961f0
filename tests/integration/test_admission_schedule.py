"""Admission on its own schedule (issue 22, item 7): rows inserted while a
polling worker works through a backlog are admitted within a few --poll
periods, not after the backlog; a new higher-priority row is claimed ahead of
the older backlog; one worker admits a workflow at a time (the others skip on
the advisory lock); the admitting run is recorded; --limit caps later
admissions too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from interpreter.config import DatabaseChoice
from interpreter.db import Database
from interpreter.engine import Runner, RunOptions
from interpreter.ops.trace import render_trace, trace_data
from interpreter.wave_store import ADMISSION_LOCK_CLASS
from tests.helpers import add_items, make_workflow, wait_for

WF = 73
# New rows (id > 1000) come in with priority 10, the backlog with 0.
ADMIT_SQL = ("SELECT id AS subject_id, CASE WHEN id > 1000 THEN 10 ELSE 0 END AS priority "
             "FROM public.items WHERE enabled")


def slow_workflow(conn, *, backlog: int, seconds: float, admit_sql: str = ADMIT_SQL) -> None:
    """items 1..backlog through one leased script step that sleeps `seconds` per subject."""
    add_items(conn, backlog)
    make_workflow(conn, WF,
                  actors=[{"name": "slow73", "kind": "script",
                           "target": "tests.actors.faults:slow",
                           "params": {"seconds": seconds}}],
                  steps=[{"number": 1, "name": "Slow", "actor": "slow73"}],
                  transitions=[(1, "*", None)], admit_sql=admit_sql)




class Worker:
    """A polling Runner (no --until-idle) in a thread, with its own pool."""

    def __init__(self, dsn: str, **options: Any):
        self.db = Database(DatabaseChoice(dsn, "test"), db_timeout=10)
        self.stop = threading.Event()
        self.runner = Runner(self.db, WF, RunOptions(**{"poll_s": 0.1, "timeline": False,
                                                        **options}), stop=self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - checked by end()
            self.error = exc

    def start(self) -> Worker:
        self.thread.start()
        wait_for(lambda: self.runner.summary is not None, what="the run to start")
        return self

    def end(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.db.close()
        assert self.error is None, self.error


@pytest.fixture
def workers(dsn: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**options: Any) -> Worker:
        w = Worker(dsn, **options).start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive() or w.error is not None:
            w.end()


def state(conn, ids: list[int]) -> list[dict[str, Any]]:
    return conn.execute("SELECT subject_id, status, admitted_at, admitted_by_run "
                        "FROM interp.subject_state WHERE workflow_id = %s "
                        "AND subject_id = ANY(%s)", (WF, [str(i) for i in ids])).fetchall()


def ready_backlog(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
                        "AND status = 'ready' AND priority = 0", (WF,)).fetchone()["n"]


def test_new_rows_are_admitted_during_a_backlog_and_urgent_ones_overtake_it(conn, workers):
    # 100 subjects at 0.2 s each, one per wave: at least 20 s of backlog (sleep is a
    # floor, whatever the load), against an admission every 0.1 s. The test stops
    # the worker long before the backlog ends.
    slow_workflow(conn, backlog=100, seconds=0.2)
    w = workers(batch_size=1, poll_s=0.1)
    wait_for(lambda: conn.execute("SELECT 1 FROM interp.checkpoints WHERE workflow_id = %s",
                                  (WF,)).fetchone(), what="the backlog to start")
    new = [1001, 1002, 1003]
    inserted_at = conn.execute("INSERT INTO public.items (id) SELECT unnest(%s::bigint[]) "
                               "RETURNING clock_timestamp() AS t", (new,)).fetchall()[-1]["t"]
    wait_for(lambda: len(state(conn, new)) == 3, what="the new rows to be admitted")
    rows = state(conn, new)
    # Admitted during the backlog, not after it: most of it is still waiting.
    assert ready_backlog(conn) >= 50
    admitted_at = max(r["admitted_at"] for r in rows)
    assert (admitted_at - inserted_at).total_seconds() < 5
    assert {r["admitted_by_run"] for r in rows} == {w.runner.run_id}

    # Priority 10 goes ahead of the older priority-0 backlog: once admitted, at most
    # the one claim already under way when the admission committed takes an old
    # subject (a claim follows the previous wave's 0.2 s, so no second one races).
    wait_for(lambda: all(r["status"] == "done" for r in state(conn, new)),
             what="the new rows to be done")
    waves = conn.execute(
        "SELECT w.claimed_at, c.subject_id::bigint > 1000 AS new FROM interp.waves w "
        "JOIN interp.checkpoints c ON c.wave_id = w.wave_id "
        "WHERE w.workflow_id = %s AND w.claimed_at > %s ORDER BY w.claimed_at",
        (WF, admitted_at)).fetchall()
    last_new = max(i for i, r in enumerate(waves) if r["new"])
    old_before_last_new = [r for r in waves[:last_new] if not r["new"]]
    assert len(old_before_last_new) <= 1, waves[:last_new + 1]
    assert ready_backlog(conn) >= 45
    w.end()


def test_a_worker_skips_admission_while_another_holds_the_lock(conn, workers, dsn):
    slow_workflow(conn, backlog=3, seconds=0.0)
    w = workers(poll_s=0.1)
    run_id = w.runner.run_id
    wait_for(lambda: len(state(conn, [1, 2, 3])) == 3, what="the first admission")

    # Another worker's admission holds the workflow's lock: this one skips, it
    # neither waits (its lanes go on) nor admits.
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (ADMISSION_LOCK_CLASS, WF))
        add_items(conn, 3, start=4)
        skips = w.runner.admitter.skips
        wait_for(lambda: w.runner.admitter.skips >= skips + 3, what="three skipped ticks")
        assert state(conn, [4, 5, 6]) == []
        holder.rollback()  # the other admission ends
    wait_for(lambda: len(state(conn, [4, 5, 6])) == 3, what="the admission after the lock")

    rows = state(conn, [1, 2, 3, 4, 5, 6])
    assert {r["admitted_by_run"] for r in rows} == {run_id}
    assert w.runner.summary is not None and w.runner.summary.admitted == 6
    trace = render_trace(trace_data(conn, WF, "5"))
    assert f"by entry point all in run {run_id}" in trace
    w.end()


def test_two_workers_admit_one_at_a_time(conn, workers):
    # An entry point that takes 0.3 s, ticks every 0.1 s: the workers' admissions
    # would overlap, so one must skip while the other admits.
    slow_workflow(conn, backlog=4, seconds=0.01, admit_sql=(
        "SELECT id AS subject_id FROM public.items CROSS JOIN (SELECT pg_sleep(0.3)) AS s"))
    a, b = workers(poll_s=0.1), workers(poll_s=0.1)
    for first in range(100, 110):
        add_items(conn, 2, start=first * 10)
        time.sleep(0.15)
    wait_for(lambda: len(state(conn, [i * 10 + k for i in range(100, 110) for k in (0, 1)]))
             == 20, what="the new rows to be admitted")
    a.end()
    b.end()
    runs = {a.runner.run_id, b.runner.run_id}
    by_run = conn.execute("SELECT admitted_by_run, count(*) AS n FROM interp.subject_state "
                          "WHERE workflow_id = %s GROUP BY 1", (WF,)).fetchall()
    assert {r["admitted_by_run"] for r in by_run} <= runs
    assert sum(r["n"] for r in by_run) == 24
    summaries = [a.runner.summary, b.runner.summary]
    assert all(s is not None for s in summaries)
    # Each subject counted once, by the run that admitted it.
    counted = {r["admitted_by_run"]: r["n"] for r in by_run}
    assert {s.run_id: s.admitted for s in summaries if s} == {r: counted.get(r, 0) for r in runs}
    assert a.runner.admitter.skips + b.runner.admitter.skips > 0


def test_limit_caps_later_admissions_too(conn, workers):
    slow_workflow(conn, backlog=3, seconds=0.0)
    w = workers(poll_s=0.1, limit=5)
    wait_for(lambda: len(state(conn, [1, 2, 3])) == 3, what="the first admission")
    add_items(conn, 5, start=4)
    wait_for(lambda: w.runner.summary is not None and w.runner.summary.admitted == 5,
             what="two more admitted")
    # Limit reached: the admission thread has ended, nothing more is admitted.
    wait_for(lambda: not w.runner.admitter.alive, what="the admission thread to end")
    time.sleep(0.5)
    assert w.runner.summary is not None and w.runner.summary.admitted == 5
    assert len(state(conn, list(range(1, 9)))) == 5
    w.end()


def test_a_sql_actor_may_be_a_data_modifying_cte_returning_bigint_ids(db, conn):
    """What docs/actors.md says of SQL actors: a data-modifying CTE is a valid
    target, and an integer subject_id matches its subject without a ::text."""
    add_items(conn, 4)
    make_workflow(conn, WF,
                  actors=[{"name": "mark73", "kind": "sql", "target": (
                      "WITH marked AS (UPDATE public.items SET done = true "
                      "WHERE id = ANY(%(ids)s::bigint[]) RETURNING id) "
                      "SELECT id AS subject_id, 'MARKED' AS outcome FROM marked")}],
                  steps=[{"number": 1, "name": "Mark", "actor": "mark73"}],
                  transitions=[(1, "MARKED", None)])
    Runner(db, WF, RunOptions(until_idle=True, poll_s=0.05, timeline=False)).run()
    outcomes = conn.execute("SELECT outcome, count(*) AS n FROM interp.checkpoints "
                            "WHERE workflow_id = %s GROUP BY 1", (WF,)).fetchall()
    assert outcomes == [{"outcome": "MARKED", "n": 4}]
    assert conn.execute("SELECT count(*) AS n FROM public.items WHERE done").fetchone()["n"] == 4
