"""Edges of the ops views (issue 22, items 6 and 9): status without JIT, prune that
refreshes the statistics, the dashboard's default workflow and its model-lane panel."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import psycopg

from interpreter.ops.dashboard import serve_in_thread
from interpreter.ops.status import status_data
from interpreter.queries import Q
from tests.integration.test_monitor import WF, make_workflow


class SettingsSpy:
    """A connection that notes the session's `jit` whenever the step query runs."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self.conn, self.jit_seen = conn, []

    def execute(self, query: Any, params: Any = None) -> Any:
        if query == Q["monitor_step_status"]:
            self.jit_seen.append(self.conn.execute("SELECT current_setting('jit') AS v"
                                                   ).fetchone()["v"])
        return self.conn.execute(query, params)

    def transaction(self) -> Any:
        return self.conn.transaction()


def test_status_reads_without_jit_and_leaves_the_session_as_it_was(conn):
    """The step query's cost estimate scales with the tables' pages: after a prune and
    a busy hour it crossed jit_above_cost and compiling cost more than the query."""
    make_workflow(conn)
    conn.execute("SET jit = on")
    spy = SettingsSpy(conn)
    data = status_data(spy, WF)  # type: ignore[arg-type]
    assert data["steps"] and spy.jit_seen == ["off"]
    assert conn.execute("SELECT current_setting('jit') AS v").fetchone()["v"] == "on"
    # inside a caller's transaction too, and the caller's transaction goes on
    with conn.transaction():
        spy = SettingsSpy(conn)
        status_data(spy, WF)  # type: ignore[arg-type]
        assert spy.jit_seen == ["off"]
        assert conn.execute("SELECT 1 AS one").fetchone()["one"] == 1


def last_analyze(dsn: str, table: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT last_analyze FROM pg_stat_user_tables "
                         "WHERE schemaname = 'interp' AND relname = %s", (table,)).fetchone()[0]


def test_prune_refreshes_the_statistics_of_what_it_deleted(dsn, conn, cli):
    make_workflow(conn)
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, error, started_at, finished_at)
        SELECT %s, 's' || lpad(i::text, 3, '0'), 1, 0, a, false, 'ERROR', 'old',
               now() - interval '45 days', now() - interval '45 days'
          FROM generate_series(1, 10) i, generate_series(1, 2) a""", (WF,))
    started = conn.execute("SELECT now() AS t").fetchone()["t"]
    dry = json.loads(cli("prune", "--workflow", str(WF), "--older-than", "30d", "--dry-run",
                         "--json").stdout)
    assert dry["candidates"] > 0
    stamp = last_analyze(dsn, "checkpoints")
    assert stamp is None or stamp < started     # a dry run changes nothing
    result = json.loads(cli("prune", "--workflow", str(WF), "--older-than", "30d",
                            "--json").stdout)
    assert result["deleted"] > 0
    for table in ("checkpoints", "checkpoint_totals", "checkpoint_minutes"):
        stamp = last_analyze(dsn, table)
        assert stamp is not None and stamp >= started, table


def add_run(conn, wf: int, *, status: str, model_waves: int) -> int:
    run_id = conn.execute(
        "INSERT INTO interp.runs (workflow_id, worker_id, host, pid, definition_version, "
        "started_at, heartbeat_at, finished_at, status) VALUES (%s, 'w', 'h', 1, 1, "
        "now() - interval '1 minute', now(), now(), %s) RETURNING run_id",
        (wf, status)).fetchone()["run_id"]
    for _ in range(model_waves):
        conn.execute("INSERT INTO interp.waves (workflow_id, step, run_id, size, model, "
                     "claimed_at, started_at, finished_at, committed, busy_ms) VALUES "
                     "(%s, 2, %s, 4, 'm1', now() - interval '50 s', now() - interval '50 s', "
                     "now() - interval '20 s', 4, 30000)", (wf, run_id))
    return run_id


def test_the_model_lane_shows_the_latest_run_that_worked(conn):
    make_workflow(conn)
    worked = add_run(conn, WF, status="finished", model_waves=2)
    rerun = add_run(conn, WF, status="finished", model_waves=0)   # found nothing to do
    lane = status_data(conn, WF)["model_lane"]
    assert [ln["run_id"] for ln in lane["lanes"]] == [worked]
    assert lane["duty_cycle"] and lane["duty_cycle"] > 0.5
    assert rerun > worked
    # a run that is running is shown, whatever it did
    running = add_run(conn, WF, status="running", model_waves=0)
    conn.execute("UPDATE interp.runs SET finished_at = NULL WHERE run_id = %s", (running,))
    assert [ln["run_id"] for ln in status_data(conn, WF)["model_lane"]["lanes"]] == [running]


def test_the_model_lane_without_any_work_shows_the_latest_run(conn):
    make_workflow(conn)
    add_run(conn, WF, status="finished", model_waves=0)
    last = add_run(conn, WF, status="finished", model_waves=0)
    assert [ln["run_id"] for ln in status_data(conn, WF)["model_lane"]["lanes"]] == [last]


def test_the_lane_run_query_probes_only_the_workflows_own_runs(conn):
    """The query that finds the run that worked reads the workflow's runs, newest
    first, through their own index entries: it was planned as a hashed scan of every
    wave in the database on each status read (52-420 ms at 1.5M waves). A workflow
    without model steps finds no such run and reads no wave."""
    make_workflow(conn)
    worked = add_run(conn, WF, status="finished", model_waves=1)
    add_run(conn, WF, status="finished", model_waves=0)
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (%s, 'script only', 'interp.subjects', 'id')", (WF + 1,))
    add_run(conn, WF + 1, status="finished", model_waves=1)   # a model wave, no model step
    plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + Q["monitor_lane_run_with_work"],
        {"workflow_id": WF}))
    assert "hashed" not in plan, plan
    found = conn.execute(Q["monitor_lane_run_with_work"], {"workflow_id": WF}).fetchone()
    assert found["run_id"] == worked
    assert conn.execute(Q["monitor_lane_run_with_work"], {"workflow_id": WF + 1}).fetchone() \
        is None


def api_workflows(db, path: str = "/api/workflows") -> dict[str, Any]:
    server, _ = serve_in_thread(db)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.loads(r.read())
    finally:
        server.shutdown()
        server.server_close()


def test_the_dashboard_opens_on_the_workflow_with_the_latest_activity(db, conn):
    listed = api_workflows(db)
    ids = [w["workflow_id"] for w in listed["workflows"]]
    # no activity anywhere: the first workflow
    assert listed["default"] == (min(ids) if ids else None)
    make_workflow(conn)                      # checkpoints up to a few minutes ago
    make_workflow(conn, WF + 1)              # the same, then a run after them
    assert api_workflows(db)["default"] in (WF, WF + 1)
    conn.execute("UPDATE interp.checkpoint_totals SET last_at = last_at - interval '1 hour' "
                 "WHERE workflow_id = %s", (WF + 1,))
    assert api_workflows(db)["default"] == WF
    add_run(conn, WF + 1, status="running", model_waves=0)
    assert api_workflows(db)["default"] == WF + 1
    # the API without workflow= reads that same default (it answered 400)
    assert api_workflows(db, "/api/status")["workflow"]["id"] == WF + 1
