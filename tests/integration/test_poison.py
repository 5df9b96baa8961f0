"""Poison results and races against the real PostgreSQL: one subject's odd value,
a killer subject, a transient error, a blocked statement or a definition edited
mid-wave must never stop the other subjects, apply an effect twice, or loop.

The script actors these tests use live in this module, which the tests add to
INTERP_SCRIPT_PREFIXES (a row in the database may only name allowed modules)."""

from __future__ import annotations

import json
import os
import signal
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from interpreter.actor_api import Result, StepResult, Subject
from interpreter.engine import Runner, RunOptions
from interpreter.errors import DefinitionError
from interpreter.wave_store import REAPS_PER_ATTEMPT, TRANSIENT_RETRIES, WaveStore
from tests.helpers import add_items, check_invariants, make_workflow

HERE = __name__  # tests.integration.test_poison, as the script targets name it
NOOP = {"name": "poison_noop", "kind": "sql", "target": "SELECT 1 WHERE false"}


@pytest.fixture(autouse=True)
def allow_this_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # On top of what the test configuration allows (conftest), this module's own actors.
    monkeypatch.setenv("INTERP_SCRIPT_PREFIXES", f"{os.environ['INTERP_SCRIPT_PREFIXES']},{HERE}")


def deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# What the poison script returns for each item id (the others get {"ok": true}).
POISON: dict[int, Any] = {
    1: {"s": "lone \ud800 surrogate", "pair": "\ud83d\ude00"},
    2: deep_list(5000),
    3: {"n": Decimal("1.50"), "big": Decimal("12345678901234567890"),
        "at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "day": date(2024, 1, 2)},
    4: Result({"x": 1}, "PASS\n"),
    5: ValueError("bad\x00error \udc80"),
    6: {"nul": "a\x00b", "key\x00": 1},
}


def poison(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    return [POISON.get(int(s.id), {"ok": True}) for s in subjects]


def kill_on_marked(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Kills its own process when the wave holds the marked subject, as a segfault
    in a native library or an OOM kill would."""
    if any(int(s.id) == params["kill"] for s in subjects):
        os.kill(os.getpid(), signal.SIGKILL)
    return [{"ok": True} for _ in subjects]


def run(db, wf: int, **options: Any) -> Any:
    opts = {"until_idle": True, "poll_s": 0.05, **options}
    return Runner(db, wf, RunOptions(**opts)).run()


def subjects(conn, wf: int) -> dict[int, dict[str, Any]]:
    rows = conn.execute("SELECT subject_id, step, status, attempts, outputs, last_error "
                        "FROM interp.subject_state WHERE workflow_id = %s", (wf,)).fetchall()
    return {int(r["subject_id"]): r for r in rows}


def failed_checkpoints(conn, wf: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT subject_id, step, attempt, outcome, error FROM "
                        "interp.checkpoints WHERE workflow_id = %s AND NOT ok "
                        "ORDER BY subject_id, attempt", (wf,)).fetchall()


# ---------------------------------------------------------------- poison results

@pytest.mark.parametrize("inline", [False, True], ids=["leased", "inline"])
def test_poison_results_end_their_subject_and_spare_the_wave(db, conn, inline):
    add_items(conn, 10)
    make_workflow(conn, 41, actors=[{"name": "poison", "kind": "script",
                                     "target": f"{HERE}:poison", "params": {"inline": inline}}],
                  steps=[{"number": 1, "actor": "poison", "max_attempts": 2,
                          "params": {"retry_base_s": 0}}],
                  transitions=[(1, "DONE", None)])
    run(db, 41)  # before: UnicodeEncodeError / RecursionError escaped the run loop
    s = subjects(conn, 41)
    assert s[1]["status"] == "done"
    assert s[1]["outputs"]["1"] == {"s": "lone \ufffd surrogate", "pair": "\U0001f600"}
    assert s[2]["status"] == "dead"
    assert s[2]["last_error"] == "output is nested too deeply to store as JSON"
    assert s[3]["status"] == "done"
    assert s[3]["outputs"]["1"] == {"n": 1.5, "big": 12345678901234567890,
                                    "at": "2024-01-02T03:04:05+00:00", "day": "2024-01-02"}
    assert s[4]["status"] == "dead" and s[4]["last_error"] == "invalid outcome 'PASS\\n'"
    assert s[5]["status"] == "dead"
    assert s[5]["last_error"] == "ValueError: bad\ufffderror \ufffd"
    assert s[6]["status"] == "done"
    assert s[6]["outputs"]["1"] == {"nul": "a\ufffdb", "key\ufffd": 1}
    assert all(s[i]["status"] == "done" and s[i]["outputs"]["1"] == {"ok": True}
               for i in range(7, 11))
    failed = failed_checkpoints(conn, 41)
    assert {int(r["subject_id"]) for r in failed} == {2, 4, 5}
    assert len(failed) == 6  # two attempts each
    assert check_invariants(conn, 41) == {}


REFUSE_SUBJECT_3 = """
CREATE FUNCTION public.refuse_three() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'subject 3 is refused'; END $$;
CREATE TRIGGER refuse_three BEFORE INSERT ON interp.checkpoints FOR EACH ROW
    WHEN (NEW.subject_id = '3' AND NEW.ok) EXECUTE FUNCTION public.refuse_three();
"""


@pytest.mark.parametrize("kind", ["gate", "leased script", "inline script"])
def test_a_row_the_database_refuses_is_split_from_its_wave(db, conn, kind):
    """A value that passes every check but that PostgreSQL refuses at commit (here a
    trigger refuses subject 3's success): the others commit, subject 3 gets an error
    checkpoint per attempt and is dead-lettered."""
    add_items(conn, 8)
    conn.execute(REFUSE_SUBJECT_3)
    if kind == "gate":
        step = {"number": 1, "kind": "gate", "gate_sql": "SELECT id::text AS subject_id, "
                "'RUN' AS outcome FROM public.items WHERE id = ANY(%(ids)s::bigint[])"}
        actors, transitions = [], [(1, "RUN", None), (1, "SKIP", None)]
    else:
        step = {"number": 1, "actor": "ok_script"}
        actors = [{"name": "ok_script", "kind": "script", "target": "tests.actors.faults:ok",
                   "params": {"inline": kind == "inline script"}}]
        transitions = [(1, "*", None)]
    step.update(max_attempts=2, params={"retry_base_s": 0})
    make_workflow(conn, 42, steps=[step], transitions=transitions, actors=actors)
    run(db, 42)  # before: the refused commit escaped the run loop
    s = subjects(conn, 42)
    assert s[3]["status"] == "dead"
    assert s[3]["last_error"] == "the database refused this result: subject 3 is refused"
    assert all(s[i]["status"] == "done" for i in s if i != 3)
    assert [(r["subject_id"], r["attempt"]) for r in failed_checkpoints(conn, 42)] == \
        [("3", 1), ("3", 2)]
    assert check_invariants(conn, 42) == {}


# ---------------------------------------------------------------- SQL actor effects

COUNT_THEN_ANSWER = """
WITH e AS (
    INSERT INTO public.effects (id, step)
    SELECT unnest(%(ids)s::bigint[]), %(step)s
    ON CONFLICT (id, step) DO UPDATE SET n = effects.n + 1
    RETURNING id)
SELECT id::text AS subject_id, {outcome} AS outcome FROM e
"""


def effects(conn) -> dict[int, int]:
    return {r["id"]: r["n"] for r in conn.execute("SELECT id, n FROM public.effects")}


def test_a_sql_actor_whose_result_fails_keeps_no_effect(db, conn):
    add_items(conn, 6)
    make_workflow(conn, 43, actors=[{"name": "review", "kind": "sql", "target":
                                     COUNT_THEN_ANSWER.format(outcome="'in-review'")}],
                  steps=[{"number": 1, "actor": "review", "params": {"retry_base_s": 0}}],
                  transitions=[(1, "*", None)])
    run(db, 43)
    s = subjects(conn, 43)
    assert all(r["status"] == "dead" and r["last_error"] == "invalid outcome 'IN-REVIEW'"
               for r in s.values())
    assert effects(conn) == {}  # before: each subject's effect applied 3 times


def test_a_sql_actor_keeps_the_effects_of_the_subjects_that_succeed(db, conn):
    """Odd ids answer DONE, even ids an invalid outcome: the statement runs again
    for the odd ones alone, so each effect is applied once, with its success."""
    add_items(conn, 6)
    outcome = "CASE WHEN id % 2 = 1 THEN 'DONE' ELSE 'in-review' END".replace("%", "%%")
    make_workflow(conn, 44, actors=[{"name": "review", "kind": "sql", "target":
                                     COUNT_THEN_ANSWER.format(outcome=outcome)}],
                  steps=[{"number": 1, "actor": "review", "max_attempts": 2,
                          "params": {"retry_base_s": 0}}],
                  transitions=[(1, "DONE", None)])
    run(db, 44)
    s = subjects(conn, 44)
    assert {i for i, r in s.items() if r["status"] == "done"} == {1, 3, 5}
    assert {i for i, r in s.items() if r["status"] == "dead"} == {2, 4, 6}
    assert effects(conn) == {1: 1, 3: 1, 5: 1}
    assert check_invariants(conn, 44, effect_step=None) == {}


def test_sql_actor_numbers_and_timestamps_become_json(db, conn):
    add_items(conn, 2)
    target = ("SELECT id::text AS subject_id, jsonb_build_object('id', id) IS NOT NULL "
              "AS ignored, CASE WHEN id = 1 THEN 2.50::numeric END AS output "
              "FROM public.items WHERE id = ANY(%(ids)s::bigint[]) AND id = 1 "
              "UNION ALL SELECT '2', NULL, NULL")
    make_workflow(conn, 45, actors=[
        {"name": "numbers", "kind": "sql", "target": target},
        {"name": "stamps", "kind": "sql", "target":
         "SELECT unnest(%(ids)s::text[]) AS subject_id, "
         "ARRAY[timestamptz '2024-05-06 07:08:09.5+00', NULL] AS output"}],
        steps=[{"number": 1, "actor": "numbers"}, {"number": 2, "actor": "stamps"}],
        transitions=[(1, "DONE", 2), (2, "DONE", None)])
    run(db, 45)
    s = subjects(conn, 45)
    assert s[1]["status"] == "done" and s[2]["status"] == "done"
    assert s[1]["outputs"]["1"] == 2.5
    stamp = datetime.fromisoformat(s[1]["outputs"]["2"][0])
    assert stamp == datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)
    assert s[1]["outputs"]["2"][1] is None


# ---------------------------------------------------------------- gate values

BOOL_GATE = ("SELECT id::text AS subject_id, (id %% 3 = 0) AS outcome FROM public.items "
             "WHERE id = ANY(%(ids)s::bigint[]) AND id %% 3 <> 1")


def test_a_boolean_gate_value_means_the_same_on_both_roads(db, conn, monkeypatch):
    """true is TRUE and false is FALSE on both roads; a missing row gets the
    default (RUN). Before, false was FALSE on the fast road and RUN on the other."""
    add_items(conn, 9)
    make_workflow(conn, 46, steps=[
        {"number": 1, "kind": "gate", "gate_sql": BOOL_GATE},
        *({"number": n, "actor": NOOP["name"]} for n in (2, 3, 4))],
        transitions=[(1, "RUN", 2), (1, "SKIP", None), (1, "TRUE", 3), (1, "FALSE", 4),
                     (2, "DONE", None), (3, "DONE", None), (4, "DONE", None)],
        actors=[NOOP])

    def outcomes() -> dict[int, str]:
        return {int(r["subject_id"]): r["outcome"] for r in conn.execute(
            "SELECT subject_id, outcome FROM interp.checkpoints "
            "WHERE workflow_id = 46 AND step = 1")}

    roads: list[bool] = []
    fast = WaveStore.commit_gate_wave
    monkeypatch.setattr(WaveStore, "commit_gate_wave",
                        lambda self, *a: roads.append(fast(self, *a)) or roads[-1])
    run(db, 46, batch_size=3)
    assert roads and all(roads)
    by_fast_road = outcomes()
    assert by_fast_road == {i: {0: "TRUE", 1: "RUN", 2: "FALSE"}[i % 3] for i in range(1, 10)}

    conn.execute("DELETE FROM interp.checkpoints WHERE workflow_id = 46")
    conn.execute("DELETE FROM interp.subject_state WHERE workflow_id = 46")
    monkeypatch.setattr(WaveStore, "commit_gate_wave", lambda self, *a: False)
    run(db, 46, batch_size=3)
    assert outcomes() == by_fast_road


# ---------------------------------------------------------------- transient errors

FLAKY = """
CREATE SEQUENCE public.flaky_gate;
CREATE SEQUENCE public.flaky_effect;
CREATE FUNCTION public.flaky(id bigint, code text, times bigint, calls text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- a sequence, not a table: its count survives the rollback of the failed try
    IF nextval(calls::regclass) <= times THEN
        RAISE EXCEPTION 'injected % for %', code, id USING ERRCODE = code;
    END IF;
    RETURN true;
END $$;
"""
FLAKY_GATE = ("SELECT id::text AS subject_id, 'RUN' AS outcome FROM public.items "
              "WHERE id = ANY(%(ids)s::bigint[]) "
              "AND public.flaky(id, {code!r}, {times}, 'public.flaky_gate')")
FLAKY_EFFECT = """
INSERT INTO public.effects (id, step)
SELECT i, %(step)s FROM unnest(%(ids)s::bigint[]) AS i
 WHERE public.flaky(i, {code!r}, {times}, 'public.flaky_effect')
ON CONFLICT (id, step) DO UPDATE SET n = effects.n + 1
"""


@pytest.mark.parametrize("code", ["40P01", "40001", "55P03"],
                         ids=["deadlock", "serialization", "lock timeout"])
def test_a_transient_error_redoes_the_wave_without_an_attempt(db, conn, code):
    """The gate fails on its first two calls (its fast road, then its general road,
    which before gave every subject a failed attempt), the SQL actor on its first
    (before: a failed attempt each, and a breaker opened by a wave of 6)."""
    add_items(conn, 6)
    conn.execute(FLAKY)
    make_workflow(conn, 47, actors=[{"name": "flaky_effect", "kind": "sql",
                                     "target": FLAKY_EFFECT.format(code=code, times=1)}],
                  steps=[{"number": 1, "kind": "gate",
                          "gate_sql": FLAKY_GATE.format(code=code, times=2)},
                         {"number": 2, "actor": "flaky_effect"}],
                  transitions=[(1, "RUN", 2), (1, "SKIP", None), (2, "DONE", None)])
    run(db, 47)
    assert failed_checkpoints(conn, 47) == []  # before: one failed attempt per subject
    assert all(r["status"] == "done" for r in subjects(conn, 47).values())
    assert effects(conn) == {i: 1 for i in range(1, 7)}
    health = conn.execute("SELECT state, consecutive_failures FROM interp.actor_health "
                          "WHERE actor = 'flaky_effect'").fetchone()
    assert health is None or (health["state"], health["consecutive_failures"]) == ("closed", 0)
    assert check_invariants(conn, 47, effect_step=2) == {}


def test_a_statement_that_always_deadlocks_still_ends(db, conn):
    add_items(conn, 3)
    conn.execute(FLAKY)
    make_workflow(conn, 48, steps=[{"number": 1, "kind": "gate", "max_attempts": 2,
                                    "gate_sql": FLAKY_GATE.format(code="40P01", times=10**9),
                                    "params": {"retry_base_s": 0}}],
                  transitions=[(1, "RUN", None), (1, "SKIP", None)])
    run(db, 48)
    s = subjects(conn, 48)
    assert all(r["status"] == "dead" and r["last_error"].startswith("gate SQL failed: injected")
               for r in s.values())
    assert len(failed_checkpoints(conn, 48)) == 2 * 3
    # every counted attempt came after TRANSIENT_RETRIES uncounted redos of its wave
    calls = conn.execute("SELECT last_value FROM public.flaky_gate").fetchone()["last_value"]
    assert calls >= 2 * (TRANSIENT_RETRIES + 1)


# ---------------------------------------------------------------- timeouts

BLOCKED_GATE = ("SELECT i.id::text AS subject_id, 'RUN' AS outcome FROM public.items i, "
                "public.held h WHERE i.id = ANY(%(ids)s::bigint[])")
BLOCKED_SQL = "SELECT unnest(%(ids)s::text[]) AS subject_id FROM public.held"


@pytest.mark.parametrize("kind", ["gate", "sql"])
def test_timeout_s_bounds_a_blocked_statement(db, conn, dsn, kind):
    import psycopg

    add_items(conn, 4)
    conn.execute("CREATE TABLE public.held (x int); INSERT INTO public.held VALUES (1)")
    if kind == "gate":
        step = {"number": 1, "kind": "gate", "gate_sql": BLOCKED_GATE}
        actors, transitions = [], [(1, "RUN", None), (1, "SKIP", None)]
    else:
        step = {"number": 1, "actor": "blocked"}
        actors = [{"name": "blocked", "kind": "sql", "target": BLOCKED_SQL}]
        transitions = [(1, "*", None)]
    step.update(max_attempts=2, timeout_s=0.5, params={"retry_base_s": 0})
    make_workflow(conn, 49, steps=[step], transitions=transitions, actors=actors)
    runner = Runner(db, 49, RunOptions(until_idle=True, poll_s=0.05, validate=False))
    runner.validate()
    errors: list[BaseException] = []

    def go() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE public.held IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=go, daemon=True)
        worker.start()
        worker.join(30)
        stalled = worker.is_alive()
        runner.stop.set()
        holder.rollback()  # let a stalled worker go
    worker.join(30)
    assert not stalled, "the blocked statement stalled the cheap lane"
    assert errors == []
    s = subjects(conn, 49)
    what = "gate SQL" if kind == "gate" else "SQL actor"
    assert all(r["status"] == "dead" and r["last_error"] == f"{what} timed out after 0.5s"
               for r in s.values())
    assert {r["outcome"] for r in failed_checkpoints(conn, 49)} == {"TIMEOUT"}


# ---------------------------------------------------------------- definitions in flight

@pytest.mark.parametrize("valid", [True, False], ids=["edit", "edit that fails validation"])
def test_a_wave_commits_under_the_definition_it_was_claimed_with(db, conn, valid):
    add_items(conn, 3)
    make_workflow(conn, 50, actors=[{"name": "ok50", "kind": "script",
                                     "target": "tests.actors.faults:ok"}, NOOP],
                  steps=[{"number": 1, "actor": "ok50"}, {"number": 2, "actor": NOOP["name"]},
                         {"number": 3, "actor": NOOP["name"]}],
                  transitions=[(1, "DONE", 2), (1, "SKIP", 3), (2, "DONE", None),
                               (3, "DONE", None)])
    runner = Runner(db, 50, RunOptions(lease_s=30))
    runner.run_id = runner.lifecycle.start_run()
    runner.admit(None)
    wave = runner.store.claim(runner.wf.steps[1], 10, with_rows=True)
    assert wave is not None and len(wave.subjects) == 3
    # While the wave runs, DONE is sent to step 3 (and SKIP to step 2, or nowhere
    # valid: a transition to a missing step).
    conn.execute("UPDATE interp.step_transitions SET to_step = CASE outcome WHEN 'DONE' THEN 3 "
                 "ELSE %s END WHERE workflow_id = 50 AND from_step = 1", (2 if valid else 9,))
    if valid:
        runner.lifecycle.paused()  # the run's control loop notices the edit and reloads
    else:
        with pytest.raises(DefinitionError, match="missing step 9"):
            runner.lifecycle.paused()
    assert runner.wf.transitions[1]["DONE"] == 3
    results = [StepResult(s.id, True, "DONE", output={"n": 1}) for s in wave.subjects]
    assert runner.store.commit(wave, results, busy_ms=1.0) == 3
    assert {r["step"] for r in subjects(conn, 50).values()} == {2}  # before: 3


# ---------------------------------------------------------------- dead workers

def expire_leases(conn, wf: int) -> None:
    conn.execute("UPDATE interp.subject_state SET lease_expires = now() - interval '1 second' "
                 "WHERE workflow_id = %s AND status = 'leased'", (wf,))


def test_an_expired_lease_runs_alone_and_the_second_charges_an_attempt(db, conn):
    assert REAPS_PER_ATTEMPT == 2  # the steps below follow it
    add_items(conn, 4)
    make_workflow(conn, 51, actors=[{"name": "ok51", "kind": "script",
                                     "target": "tests.actors.faults:ok"}],
                  steps=[{"number": 1, "actor": "ok51", "max_attempts": 2}],
                  transitions=[(1, "DONE", None)])
    runner = Runner(db, 51, RunOptions(lease_s=30))
    runner.run_id = runner.lifecycle.start_run()
    runner.admit(None)
    store, step = runner.store, runner.wf.steps[1]

    def claim_and_die() -> str:
        wave = store.claim(step, 10, with_rows=True)
        assert wave is not None
        expire_leases(conn, 51)  # its worker died: the lease runs out
        store.reap_expired_leases()
        return wave.subjects[0].id if len(wave.subjects) == 1 else ""

    claim_and_die()  # a wave of 4, reaped: no attempt charged yet
    assert {(r["status"], r["attempts"]) for r in subjects(conn, 51).values()} == \
        {("ready", 0)}
    assert failed_checkpoints(conn, 51) == []

    killer = claim_and_die()  # after an expiry, a subject runs alone
    assert killer
    s = subjects(conn, 51)[int(killer)]
    assert (s["status"], s["attempts"]) == ("ready", 1)
    assert "its lease expired 2 times at this step" in s["last_error"]

    for _ in range(3):  # its wave-mates, alone too, succeed
        wave = store.claim(step, 10, with_rows=True)
        assert wave is not None and len(wave.subjects) == 1 and wave.subjects[0].id != killer
        store.commit(wave, [StepResult(wave.subjects[0].id, True, "DONE")], busy_ms=1.0)

    assert claim_and_die() == killer and claim_and_die() == killer
    s = subjects(conn, 51)[int(killer)]
    assert (s["status"], s["attempts"]) == ("dead", 2)
    assert [(r["subject_id"], r["attempt"]) for r in failed_checkpoints(conn, 51)] == \
        [(killer, 1), (killer, 2)]
    assert check_invariants(conn, 51) == {}


def test_a_subject_that_kills_its_worker_ends_dead_lettered(cli, conn):
    add_items(conn, 5)
    make_workflow(conn, 52, actors=[{"name": "killer", "kind": "script",
                                     "target": f"{HERE}:kill_on_marked",
                                     "params": {"kill": 3}}],
                  steps=[{"number": 1, "actor": "killer", "max_attempts": 1}],
                  transitions=[(1, "DONE", None)])
    codes = []
    for _ in range(6):
        proc = cli("run", "--workflow", "52", "--until-idle", "--lease", "1", "--poll", "0.05",
                   check=False, timeout=120)
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
    # before: every run died on subject 3 and the next one took it again, for ever
    assert codes[-1] == 0, codes
    assert codes.count(-signal.SIGKILL) == REAPS_PER_ATTEMPT, codes
    s = subjects(conn, 52)
    assert s[3]["status"] == "dead" and "its lease expired" in s[3]["last_error"]
    assert all(s[i]["status"] == "done" for i in (1, 2, 4, 5))  # its wave-mates are spared
    assert [int(r["subject_id"]) for r in failed_checkpoints(conn, 52)] == [3]
    assert check_invariants(conn, 52) == {}


def test_outputs_of_the_poison_script_as_stored(conn):
    """The jsonb a poison output becomes is what PostgreSQL itself makes of the same
    JSON text (the normalisation adds no meaning of its own)."""
    from interpreter.wave_rules import dump_output

    for poison_output in (POISON[1], POISON[6]):
        text, error = dump_output(poison_output, 1000)
        assert error is None and text is not None
        stored = conn.execute("SELECT %s::jsonb AS j", (text,)).fetchone()["j"]
        assert stored == json.loads(text)
        # what jsonb makes of the same JSON written with escapes only
        escaped = json.dumps(poison_output).replace("\\u0000", "\\ufffd") \
            .replace("\\ud800", "\\ufffd")
        assert conn.execute("SELECT %s::jsonb AS j", (escaped,)).fetchone()["j"] == stored
