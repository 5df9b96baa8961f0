"""Builders for test workflows over a small generic subject table."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

#: The checkout the tests run from: `interp` subprocesses get it as PYTHONPATH and cwd.
REPO_ROOT = Path(__file__).resolve().parent.parent



def wait_for(predicate: Callable[[], Any], timeout: float = 90.0,
             what: str = "the condition", poll_s: float = 0.02) -> None:
    """Polls until predicate() is true. The timeout only guards against a hang: a
    test waits for the state it needs, never for a time that should be enough
    (a loaded CI machine makes any such time too short one day), and asserts
    what it measures separately."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll_s)


ITEMS_DDL = """
CREATE TABLE IF NOT EXISTS public.items (
    id      bigint PRIMARY KEY,
    title   text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true,
    done    boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS public.effects (
    id      bigint NOT NULL,
    step    integer NOT NULL,
    n       integer NOT NULL DEFAULT 1,
    PRIMARY KEY (id, step)
);
"""

# A SQL actor whose effect is counted: a second application for the same
# subject would make n = 2, which the invariants reject.
COUNT_EFFECT_SQL = """
INSERT INTO public.effects (id, step)
SELECT unnest(%(ids)s::bigint[]), %(step)s
ON CONFLICT (id, step) DO UPDATE SET n = effects.n + 1
"""

GATE_NOT_DONE_SQL = """
SELECT id::text AS subject_id, CASE WHEN done THEN 'SKIP' ELSE 'RUN' END AS outcome
  FROM public.items WHERE id = ANY(%(ids)s::bigint[])
"""


def add_items(conn: psycopg.Connection[Any], n: int, start: int = 1,
              title: str = "item {i}") -> None:
    conn.execute(ITEMS_DDL)
    conn.execute("INSERT INTO public.items (id, title) SELECT g, replace(%s, '{i}', g::text) "
                 "FROM generate_series(%s::bigint, %s::bigint) g ON CONFLICT DO NOTHING",
                 (title, start, start + n - 1))


def make_workflow(conn: psycopg.Connection[Any], wf: int,
                  steps: list[dict[str, Any]], transitions: list[tuple[int, str, int | None]],
                  *, first_step: int = 1, actors: list[dict[str, Any]] | None = None,
                  admit_sql: str = "SELECT id AS subject_id FROM public.items WHERE enabled"
                  ) -> None:
    """steps: dicts with number, name, kind, and optional actor, gate_sql, output_schema,
    outcome_field, max_attempts, timeout_s, params, template."""
    conn.execute(ITEMS_DDL)
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (%s, %s, 'public.items', 'id') ON CONFLICT DO NOTHING",
                 (wf, f"test workflow {wf}"))
    for a in actors or []:
        conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                     "(%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, "
                     "target = EXCLUDED.target, params = EXCLUDED.params",
                     (a["name"], a["kind"], a["target"], json.dumps(a.get("params", {}))))
    for s in steps:
        conn.execute(
            "INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, gate_sql,"
            " output_schema, outcome_field, max_attempts, timeout_s, params, template) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (wf, s["number"], s.get("name", f"step {s['number']}"), s.get("kind", "actor"),
             s.get("actor"), s.get("gate_sql"),
             json.dumps(s["output_schema"]) if s.get("output_schema") is not None else None,
             s.get("outcome_field"), s.get("max_attempts", 3), s.get("timeout_s", 30),
             json.dumps(s.get("params", {})), s.get("template")))
    for frm, outcome, to in transitions:
        conn.execute("INSERT INTO interp.step_transitions VALUES (%s, %s, %s, %s)",
                     (wf, frm, outcome, to))
    conn.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                 "VALUES (%s, 'all', %s, %s)", (wf, admit_sql, first_step))


def standard_pipeline(conn: psycopg.Connection[Any], wf: int = 10, n: int = 50,
                      script_target: str = "tests.actors.faults:ok",
                      script_params: dict[str, Any] | None = None,
                      script_max_attempts: int = 3) -> None:
    """gate -> script -> SQL effect counter -> end, over n items."""
    add_items(conn, n)
    make_workflow(
        conn, wf,
        actors=[{"name": f"script_{wf}", "kind": "script", "target": script_target,
                 "params": script_params or {}},
                {"name": f"effect_{wf}", "kind": "sql", "target": COUNT_EFFECT_SQL}],
        steps=[{"number": 1, "name": "Gate", "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
               {"number": 2, "name": "Script", "actor": f"script_{wf}",
                "max_attempts": script_max_attempts, "params": {"retry_base_s": 0.05}},
               {"number": 3, "name": "Effect", "actor": f"effect_{wf}"}],
        transitions=[(1, "RUN", 2), (1, "SKIP", None), (2, "*", 3), (3, "DONE", None)])


INVARIANTS = {
    "not ended": """SELECT subject_id FROM interp.subject_state
                     WHERE workflow_id = %(wf)s AND status NOT IN ('done', 'dead')""",
    "dead without error": """SELECT subject_id FROM interp.subject_state
                     WHERE workflow_id = %(wf)s AND status = 'dead' AND last_error IS NULL""",
    "duplicate success": """SELECT subject_id, step, visit FROM interp.checkpoints
                     WHERE workflow_id = %(wf)s AND ok GROUP BY 1, 2, 3 HAVING count(*) > 1""",
    "lease left": """SELECT subject_id FROM interp.subject_state
                     WHERE workflow_id = %(wf)s AND (lease_owner IS NOT NULL
                       OR status = 'leased')""",
}


def check_invariants(conn: psycopg.Connection[Any], wf: int,
                     effect_step: int | None = None) -> dict[str, list[Any]]:
    """Returns violations by name (empty lists when all hold)."""
    out = {name: conn.execute(q, {"wf": wf}).fetchall() for name, q in INVARIANTS.items()}
    if effect_step is not None:
        out["effect not exactly once"] = conn.execute(
            """SELECT e.id, e.n, c.n AS checkpoints
                 FROM public.effects e
                 FULL JOIN (SELECT subject_id::bigint AS id, count(*) AS n
                              FROM interp.checkpoints
                             WHERE workflow_id = %(wf)s AND step = %(s)s AND ok
                             GROUP BY 1) c USING (id)
                WHERE e.step IS NOT DISTINCT FROM %(s)s
                  AND (e.n IS DISTINCT FROM 1 OR c.n IS DISTINCT FROM 1)""",
            {"wf": wf, "s": effect_step}).fetchall()
    out["sequence breaks transitions"] = conn.execute(
        """WITH ok AS (
             SELECT subject_id, step, outcome, visit,
                    lead(step) OVER (PARTITION BY subject_id ORDER BY visit, finished_at) AS nxt
               FROM interp.checkpoints WHERE workflow_id = %(wf)s AND ok)
           SELECT ok.subject_id, ok.step, ok.outcome, ok.nxt FROM ok
            WHERE ok.nxt IS NOT NULL AND NOT EXISTS (
              SELECT 1 FROM interp.step_transitions t
               WHERE t.workflow_id = %(wf)s AND t.from_step = ok.step
                 AND t.to_step = ok.nxt AND (t.outcome = ok.outcome OR (t.outcome = '*'
                     AND NOT EXISTS (SELECT 1 FROM interp.step_transitions t2
                                      WHERE t2.workflow_id = %(wf)s AND t2.from_step = ok.step
                                        AND t2.outcome = ok.outcome))))""",
        {"wf": wf}).fetchall()
    return {k: v for k, v in out.items() if v}


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Ends a server or worker a test started: SIGTERM, then SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
