"""A new actor kind is one module that registers it, and one migration for the
`interp.actors.kind` CHECK: the lanes, validate and the definitions ask the
registry (interpreter/actor_kinds.py), not a switch on the kind's name.

Here the module is this test: it registers a kind the package does not know,
widens the CHECK in its own fresh database (what the migration would do), and
runs a workflow with it through the engine, leased and inline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from interpreter.actor_api import StepResult, Subject, utcnow
from interpreter.actor_kinds import CHEAP_LANE, ActorKind, register, unregister
from interpreter.definitions import load_workflow
from interpreter.engine import Runner, RunOptions
from interpreter.validate import validate_workflow
from interpreter.wave_store import WaveStore
from tests.helpers import add_items, make_workflow


def shout(actor, step, subjects: list[Subject]) -> list[StepResult]:
    """The test kind's wave: the subject's title in capitals, with the actor's target
    as a suffix; a title ending in 3 is a FAIL outcome."""
    now = utcnow()
    return [StepResult(s.id, True, "FAIL" if str(s.row["title"]).endswith("3") else "DONE",
                       output={"shout": str(s.row["title"]).upper() + actor.target},
                       started_at=now, finished_at=now) for s in subjects]


def shout_problems(actor: str, target: str) -> list[str]:
    return [] if target.startswith("!") else [f"shout actor {actor!r}: target must start with !"]


@pytest.fixture
def shout_kind(conn) -> Iterator[ActorKind]:
    kind = register(ActorKind("shout", lane=CHEAP_LANE, check=shout_problems,
                              inline=lambda params: bool(params.get("inline")),
                              run_wave=shout))
    # The migration a new kind ships with: add its name to the actors' kind CHECK.
    name = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'interp.actors'::regclass "
        "AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%%kind = ANY%%'"
    ).fetchone()["conname"]
    conn.execute(f'ALTER TABLE interp.actors DROP CONSTRAINT "{name}"')
    conn.execute("ALTER TABLE interp.actors ADD CONSTRAINT actors_kind_check "
                 "CHECK (kind IN ('sql', 'script', 'model', 'shout'))")
    yield kind
    unregister("shout")


def shout_workflow(conn, wf: int, target: str, params: dict | None = None) -> None:
    add_items(conn, 6)
    make_workflow(conn, wf,
                  actors=[{"name": "shouter", "kind": "shout", "target": target,
                           "params": params or {}}],
                  steps=[{"number": 1, "actor": "shouter"}],
                  transitions=[(1, "DONE", None), (1, "FAIL", None)])


@pytest.mark.parametrize("inline", [False, True])
def test_a_kind_registered_from_outside_runs_through_the_engine(db, conn, shout_kind, inline,
                                                                monkeypatch):
    shout_workflow(conn, 70, "!", {"inline": inline})
    leased: list[int] = []
    claim = WaveStore.claim

    def counting_claim(self, step, limit, **kw):
        leased.append(limit)
        return claim(self, step, limit, **kw)

    monkeypatch.setattr(WaveStore, "claim", counting_claim)
    summary = Runner(db, 70, RunOptions(until_idle=True, poll_s=0.05, batch_size=4)).run()
    rows = conn.execute("SELECT subject_id, outcome, output FROM interp.checkpoints "
                        "WHERE workflow_id = 70 AND step = 1 AND ok ORDER BY subject_id"
                        ).fetchall()
    assert [(r["subject_id"], r["outcome"], r["output"]) for r in rows] == [
        (str(i), "FAIL" if i == 3 else "DONE", {"shout": f"ITEM {i}!"}) for i in range(1, 7)]
    assert summary.checkpoints == 6
    # leased: waves claimed with a lease, then committed; inline: never a lease
    assert (leased == []) == inline


def test_validate_asks_the_kind_how_to_check_its_target(db, conn, shout_kind):
    shout_workflow(conn, 71, "no bang")
    wf = load_workflow(conn, 71)
    assert not wf.is_model_step(wf.steps[1])
    assert "step 1 (step 1): shout actor 'shouter': target must start with !" in \
        validate_workflow(conn, wf)


def test_validate_asks_the_kind_what_a_step_of_it_needs(db, conn, shout_kind):
    """check_step sees the workflow and the step, not only the actor's target: what a
    step of the kind needs beside it (the model kind: its model row and template)."""
    def needs_a_template(wf, step, actor) -> list[str]:
        return [] if step.template else [f"a {actor.kind} step needs a template"]

    register(dataclasses.replace(shout_kind, check_step=needs_a_template))
    shout_workflow(conn, 73, "!")
    assert "step 1 (step 1): a shout step needs a template" in \
        validate_workflow(conn, load_workflow(conn, 73))


def test_an_unregistered_kind_is_a_definition_problem(db, conn, shout_kind):
    shout_workflow(conn, 72, "!")
    unregister("shout")
    problems = validate_workflow(conn, load_workflow(conn, 72))
    assert any("has unknown kind 'shout'" in p for p in problems)
