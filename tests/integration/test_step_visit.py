"""Which pass through a step a subject is on reaches scripts (leased and inline
waves) as Subject.visit_of_step: 1, then 2 when a loop brings it back; a retry
of the same pass keeps its number."""

from __future__ import annotations

from interpreter.engine import Runner, RunOptions
from tests.helpers import add_items, check_invariants, make_workflow

WF = 95


def test_scripts_see_which_pass_through_their_step_they_are_on(db, conn):
    add_items(conn, 4)
    make_workflow(
        conn, WF,
        actors=[{"name": "rounds_95", "kind": "script", "target": "tests.actors.loops:rounds"}],
        steps=[
            # a leased script wave: AGAIN at passes 1 and 2, DONE at pass 3
            {"number": 1, "name": "score", "actor": "rounds_95", "params": {"rounds": 3}},
            # an inline script wave; its second pass fails once and is retried
            {"number": 2, "name": "revise", "actor": "rounds_95",
             "params": {"inline": True, "rounds": 99, "fail_at_visit": 2,
                        "retry_base_s": 0.01}},
        ],
        transitions=[(1, "AGAIN", 2), (1, "DONE", None), (2, "*", 1)])
    Runner(db, WF, RunOptions(until_idle=True, poll_s=0.02, batch_size=2)).run()

    assert not any(check_invariants(conn, WF).values())
    rows = conn.execute(
        "SELECT subject_id, step, ok, output FROM interp.checkpoints WHERE workflow_id = %s "
        "ORDER BY subject_id, visit, attempt", (WF,)).fetchall()
    for sid in ("1", "2", "3", "4"):
        path = [(r["step"], r["ok"], r["output"]) for r in rows if r["subject_id"] == sid]
        assert path == [
            (1, True, {"visit": 1, "attempt": 1}),
            (2, True, {"visit": 1, "attempt": 1}),
            (1, True, {"visit": 2, "attempt": 1}),
            (2, False, None),                       # pass 2 fails its first attempt ...
            (2, True, {"visit": 2, "attempt": 2}),  # ... and its retry is still pass 2
            (1, True, {"visit": 3, "attempt": 1}),
        ], sid
