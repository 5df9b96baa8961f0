"""The gate's fast road (one statement per wave, queries.sql gate_wave) against
the general road (the gate, then commit_results): the same checkpoints and the
same subject_state moves, and odd waves fall back instead of half-writing."""

from __future__ import annotations

from typing import Any

import pytest

from interpreter.engine import Runner, RunOptions
from interpreter.wave_store import WaveStore
from tests.helpers import add_items, check_invariants, make_workflow

# Outcomes of every shape a gate may give: plain, lower case, NULL, empty, a
# missing row (the default), one routed only by '*', and ids outside the wave.
MIXED_GATE = """
SELECT id::text AS subject_id,
       CASE id %% 7 WHEN 0 THEN 'RUN' WHEN 1 THEN 'skip' WHEN 2 THEN NULL
                   WHEN 3 THEN '' WHEN 4 THEN 'OTHER' ELSE 'SKIP' END AS outcome
  FROM public.items
 WHERE id = ANY(%(ids)s::bigint[]) AND id %% 7 <> 5
UNION ALL SELECT 'not-in-the-wave', 'SKIP';
"""
MIXED_TRANSITIONS = [(1, "RUN", 2), (1, "SKIP", None), (1, "*", 3),
                     (2, "DONE", None), (3, "DONE", None)]
GATE_ENDS = [(1, "RUN", None), (1, "SKIP", None)]
NOOP = {"name": "noop_gate_test", "kind": "sql", "target": "SELECT 1 WHERE false"}


@pytest.fixture
def roads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records what every gate wave's fast road returned."""
    taken: list[bool] = []
    fast = WaveStore.commit_gate_wave

    def spy(self: WaveStore, *args: Any) -> bool:
        ok = fast(self, *args)
        taken.append(ok)
        return ok

    monkeypatch.setattr(WaveStore, "commit_gate_wave", spy)
    return taken


def build(conn, wf: int, gate_sql: str, transitions, **step_params: Any) -> None:
    """A gate at step 1, and a no-op SQL step for every other step a transition names."""
    targets = sorted({t for _, _, t in transitions if t not in (None, 1)})
    make_workflow(conn, wf, steps=[
        {"number": 1, "kind": "gate", "gate_sql": gate_sql, "params": step_params},
        *({"number": n, "actor": NOOP["name"]} for n in targets)],
        transitions=transitions, actors=[NOOP])


def run(db, wf: int, batch: int = 10) -> None:
    Runner(db, wf, RunOptions(until_idle=True, poll_s=0.05, batch_size=batch)).run()


def state(conn, wf: int) -> dict[str, Any]:
    cps = conn.execute(
        "SELECT subject_id, step, visit, attempt, ok, outcome, error FROM interp.checkpoints "
        "WHERE workflow_id = %s ORDER BY subject_id, step, visit, attempt", (wf,)).fetchall()
    subjects = conn.execute(
        "SELECT subject_id, step, status, attempts, visits, last_outcome, last_error "
        "FROM interp.subject_state WHERE workflow_id = %s ORDER BY subject_id", (wf,)).fetchall()
    return {"checkpoints": cps, "subjects": subjects}


def general_road_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WaveStore, "commit_gate_wave", lambda self, *args: False)


def test_fast_road_commits_what_the_general_road_commits(db, conn, roads, monkeypatch):
    add_items(conn, 40)
    build(conn, 31, MIXED_GATE, MIXED_TRANSITIONS)
    run(db, 31)
    assert roads and all(roads), "every wave of this gate should take the fast road"
    fast = state(conn, 31)

    conn.execute("DELETE FROM interp.checkpoints WHERE workflow_id = 31")
    conn.execute("DELETE FROM interp.subject_state WHERE workflow_id = 31")
    general_road_only(monkeypatch)
    run(db, 31)
    assert state(conn, 31) == fast
    outcomes = {r["outcome"] for r in fast["checkpoints"] if r["step"] == 1}
    assert outcomes == {"RUN", "SKIP", "OTHER"}  # lower case, NULL, '' and missing resolved
    assert all(s["status"] == "done" for s in fast["subjects"])
    assert check_invariants(conn, 31) == {}


@pytest.mark.parametrize("gate_sql, transitions, why", [
    ("SELECT id::text AS subject_id, CASE WHEN id = 3 THEN 'not valid!' ELSE 'RUN' END "
     "AS outcome FROM public.items WHERE id = ANY(%(ids)s::bigint[])",
     GATE_ENDS, "an invalid outcome"),
    ("SELECT id::text AS subject_id, CASE WHEN id = 3 THEN 'NOWHERE' ELSE 'RUN' END "
     "AS outcome FROM public.items WHERE id = ANY(%(ids)s::bigint[])",
     GATE_ENDS, "an outcome with no transition"),
    ("SELECT id::text AS subject_id, 'RUN' AS outcome FROM public.items "
     "WHERE id = ANY(%(ids)s::bigint[]) UNION ALL SELECT '3', 'SKIP'",
     GATE_ENDS, "two rows for one subject"),
    ("SELECT id::text AS subject_id, 'RUN' || left('', 1 / (id - 3)::int) AS outcome "
     "FROM public.items WHERE id = ANY(%(ids)s::bigint[])",
     GATE_ENDS, "a gate that fails at run time (division by zero at id 3)"),
    ("SELECT id AS subject_id FROM public.items WHERE id = ANY(%(ids)s::bigint[])",
     GATE_ENDS, "no outcome column"),
])
def test_odd_waves_take_the_general_road_with_the_same_result(
        db, conn, roads, monkeypatch, gate_sql, transitions, why):
    add_items(conn, 6)
    build(conn, 32, gate_sql, transitions, retry_base_s=0, max_attempts=2)
    run(db, 32, batch=6)
    assert roads and not any(roads), f"{why}: the fast road must write nothing"
    fast = state(conn, 32)

    conn.execute("DELETE FROM interp.checkpoints WHERE workflow_id = 32")
    conn.execute("DELETE FROM interp.subject_state WHERE workflow_id = 32")
    general_road_only(monkeypatch)
    run(db, 32, batch=6)
    assert state(conn, 32) == fast
    assert check_invariants(conn, 32) == {}


def test_visit_limit_takes_the_general_road(db, conn, roads):
    add_items(conn, 3)
    # A gate that loops to itself: the visit limit must dead-letter, as the general road does.
    build(conn, 33, "SELECT id::text AS subject_id, 'AGAIN' AS outcome FROM public.items "
                    "WHERE id = ANY(%(ids)s::bigint[])", [(1, "AGAIN", 1), *GATE_ENDS],
          max_visits=4)
    run(db, 33)
    assert roads[:3] == [True, True, True] and roads[-1] is False
    subjects = state(conn, 33)["subjects"]
    assert {s["status"] for s in subjects} == {"dead"}
    assert all("transitions" in s["last_error"] for s in subjects)
