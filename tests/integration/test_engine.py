"""The interpreter against a real PostgreSQL: waves, gates, actors, transitions,
checkpoints, leases, retries, the breaker, pause, and crash-resume."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time

import pytest

from interpreter.actor_kinds import kind_of
from interpreter.engine import Runner, RunOptions
from interpreter.errors import DefinitionError
from tests.helpers import (
    COUNT_EFFECT_SQL,
    GATE_NOT_DONE_SQL,
    add_items,
    check_invariants,
    make_workflow,
    standard_pipeline,
    wait_for,
)


def run(db, wf, **kw):
    opts = RunOptions(until_idle=True, poll_s=0.05, **kw)
    return Runner(db, wf, opts).run()




def outcomes(conn, wf, step):
    return {r["subject_id"]: r["outcome"] for r in conn.execute(
        "SELECT subject_id, outcome FROM interp.checkpoints WHERE workflow_id = %s AND step = %s "
        "AND ok", (wf, step))}


def test_gate_skips_done_subjects_and_runs_the_rest(db, conn):
    standard_pipeline(conn, wf=10, n=20)
    conn.execute("UPDATE public.items SET done = true WHERE id <= 5")
    summary = run(db, 10, batch_size=7)
    gate = outcomes(conn, 10, 1)
    assert len(gate) == 20  # every subject gets its own gate checkpoint
    assert {k for k, v in gate.items() if v == "SKIP"} == {str(i) for i in range(1, 6)}
    # skipped subjects never reached the script step
    assert set(outcomes(conn, 10, 2)) == {str(i) for i in range(6, 21)}
    assert summary.checkpoints == 20 + 15 + 15
    assert check_invariants(conn, 10, effect_step=3) == {}


def test_gate_is_one_statement_per_wave(db, conn):
    standard_pipeline(conn, wf=11, n=30)
    run(db, 11, batch_size=10)
    waves = conn.execute("SELECT count(*) AS n, sum(size) AS s FROM interp.waves "
                         "WHERE workflow_id = 11 AND step = 1").fetchone()
    assert waves["n"] == 3 and waves["s"] == 30


def test_gate_ids_outside_the_wave_are_ignored(db, conn):
    add_items(conn, 5)
    make_workflow(conn, 12, steps=[{"number": 1, "kind": "gate", "gate_sql":
                                    "SELECT 'not-a-subject' AS subject_id, 'SKIP' AS outcome "
                                    "UNION ALL SELECT '999', 'SKIP'"}],
                  transitions=[(1, "RUN", None), (1, "SKIP", None)])
    run(db, 12)
    assert set(outcomes(conn, 12, 1).values()) == {"RUN"}
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 12"
                        ).fetchone()["n"] == 5


def test_branching_and_output_passing(db, conn):
    add_items(conn, 10)
    make_workflow(
        conn, 13,
        actors=[{"name": "words", "kind": "script", "target": "actors.examples:count_words",
                 "params": {"long_at": 2}},
                {"name": "save_long", "kind": "sql", "target": """
                    INSERT INTO public.effects (id, step, n)
                    SELECT (b->>'subject_id')::bigint, %(step)s, (b->'outputs'->'1'->>'words')::int
                      FROM jsonb_array_elements(%(batch)s) b
                    RETURNING id::text AS subject_id, 'SAVED' AS outcome"""}],
        steps=[{"number": 1, "actor": "words"}, {"number": 2, "actor": "save_long"}],
        transitions=[(1, "LONG", 2), (1, "SHORT", None), (2, "SAVED", None)])
    conn.execute("UPDATE public.items SET title = 'x'")
    # count_words reads `description`; items have none, so every subject is SHORT
    run(db, 13)
    assert set(outcomes(conn, 13, 1).values()) == {"SHORT"}
    assert outcomes(conn, 13, 2) == {}


def test_sql_actor_reads_earlier_outputs(db, conn):
    add_items(conn, 4)
    make_workflow(
        conn, 14,
        actors=[{"name": "echo14", "kind": "script", "target": "tests.actors.faults:ok"},
                {"name": "save14", "kind": "sql", "target": """
                    INSERT INTO public.effects (id, step, n)
                    SELECT (b->>'subject_id')::bigint, %(step)s,
                           (b->'outputs'->'1'->>'attempt')::int
                      FROM jsonb_array_elements(%(batch)s) b
                    RETURNING id::text AS subject_id, 'SAVED' AS outcome,
                              jsonb_build_object('saved', n) AS output"""}],
        steps=[{"number": 1, "actor": "echo14"}, {"number": 2, "actor": "save14"}],
        transitions=[(1, "DONE", 2), (2, "SAVED", None)])
    run(db, 14)
    rows = conn.execute("SELECT id, n FROM public.effects WHERE step = 2 ORDER BY id").fetchall()
    assert [(r["id"], r["n"]) for r in rows] == [(1, 1), (2, 1), (3, 1), (4, 1)]
    out = conn.execute("SELECT outputs FROM interp.subject_state WHERE workflow_id = 14 "
                       "AND subject_id = '1'").fetchone()["outputs"]
    assert out["1"]["id"] == "1" and out["2"] == {"saved": 1}


def test_admission_is_idempotent_and_admits_only_new(db, conn):
    standard_pipeline(conn, wf=15, n=10)
    first = run(db, 15)
    assert first.admitted == 10
    again = run(db, 15)
    assert again.admitted == 0 and again.checkpoints == 0
    add_items(conn, 3, start=11)
    third = run(db, 15)
    assert third.admitted == 3 and third.checkpoints == 9


def test_limit_caps_admission(db, conn):
    standard_pipeline(conn, wf=16, n=10)
    s = run(db, 16, limit=4)
    assert s.admitted == 4
    assert conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 16"
                        ).fetchone()["n"] == 4


def test_every_wave_records_when_its_actor_started(db, conn):
    # leased script waves too, not only inline and model waves: the lane-gap and
    # wave-duration views measure from started_at
    standard_pipeline(conn, wf=16, n=12, script_target="tests.actors.faults:slow",
                      script_params={"seconds": 0.01})
    run(db, 16, batch_size=5)
    waves = conn.execute("SELECT step, claimed_at, started_at, finished_at FROM interp.waves "
                         "WHERE workflow_id = 16 AND finished_at IS NOT NULL").fetchall()
    assert {w["step"] for w in waves} >= {2, 3}
    for w in waves:
        assert w["started_at"] is not None, w
        assert w["claimed_at"] <= w["started_at"] <= w["finished_at"], w


def test_retries_with_backoff_then_success(db, conn):
    standard_pipeline(conn, wf=17, n=5, script_target="tests.actors.faults:fail_k_times",
                      script_params={"k": 2}, script_max_attempts=3)
    run(db, 17, breaker_threshold=1000)  # every try of the wave fails; keep the breaker out
    rows = conn.execute("SELECT subject_id, attempt, ok, started_at FROM interp.checkpoints "
                        "WHERE workflow_id = 17 AND step = 2 ORDER BY subject_id, attempt"
                        ).fetchall()
    by_subject: dict[str, list] = {}
    for r in rows:
        by_subject.setdefault(r["subject_id"], []).append(r)
    for attempts in by_subject.values():
        assert [(a["attempt"], a["ok"]) for a in attempts] == [(1, False), (2, False), (3, True)]
        # exponential backoff: the second gap is at least the base delay doubled
        gap2 = (attempts[2]["started_at"] - attempts[1]["started_at"]).total_seconds()
        assert gap2 >= 0.09
    assert check_invariants(conn, 17, effect_step=3) == {}


def test_dead_letter_keeps_the_last_error(db, conn):
    standard_pipeline(conn, wf=18, n=3, script_target="tests.actors.faults:fail_k_times",
                      script_params={"k": 10}, script_max_attempts=2)
    run(db, 18, breaker_threshold=1000)
    rows = conn.execute("SELECT status, step, attempts, last_error FROM interp.subject_state "
                        "WHERE workflow_id = 18").fetchall()
    assert all(r["status"] == "dead" and r["step"] == 2 and r["attempts"] == 2 for r in rows)
    assert all("fails on purpose" in r["last_error"] for r in rows)
    assert check_invariants(conn, 18) == {}


def test_one_failing_subject_does_not_fail_the_wave(db, conn):
    standard_pipeline(conn, wf=19, n=6, script_target="tests.actors.faults:fail_marked",
                      script_max_attempts=1)
    conn.execute("UPDATE public.items SET title = 'BOOM' WHERE id = 4")
    run(db, 19, breaker_threshold=1000)
    states = {r["subject_id"]: r["status"] for r in conn.execute(
        "SELECT subject_id, status FROM interp.subject_state WHERE workflow_id = 19")}
    assert states.pop("4") == "dead"
    assert set(states.values()) == {"done"}


@pytest.mark.parametrize("target,params,error", [
    ("tests.actors.faults:hang", {"seconds": 5}, "timed out"),
    ("tests.actors.faults:wrong_count", {}, "returned"),
    ("tests.actors.faults:huge_output", {}, "output too large"),
    ("tests.actors.faults:not_json", {}, "not JSON"),
    ("tests.actors.faults:out_of_memory", {}, "MemoryError"),
    ("tests.actors.faults:raise_always", {}, "always raises"),
])
def test_faulty_script_actors_are_recorded_and_dead_lettered(db, conn, target, params, error):
    standard_pipeline(conn, wf=20, n=2, script_target=target, script_params=params,
                      script_max_attempts=1)
    conn.execute("UPDATE interp.steps SET timeout_s = 0.5 WHERE workflow_id = 20 AND "
                 "execution_order = 2")
    run(db, 20, breaker_threshold=1000)
    rows = conn.execute("SELECT ok, error FROM interp.checkpoints WHERE workflow_id = 20 "
                        "AND step = 2").fetchall()
    assert rows and all(not r["ok"] and error in r["error"] for r in rows), rows
    assert check_invariants(conn, 20) == {}


def test_wrong_shape_fails_against_the_output_schema(db, conn):
    standard_pipeline(conn, wf=21, n=2, script_target="tests.actors.faults:wrong_shape",
                      script_max_attempts=1)
    conn.execute("""UPDATE interp.steps SET output_schema = '{"type": "object",
                    "required": ["words"]}' WHERE workflow_id = 21 AND execution_order = 2""")
    run(db, 21, breaker_threshold=1000)
    errors = [r["error"] for r in conn.execute(
        "SELECT error FROM interp.checkpoints WHERE workflow_id = 21 AND step = 2")]
    assert errors and all("schema" in e for e in errors)


def test_breaker_opens_and_subjects_wait_instead_of_failing(db, conn):
    standard_pipeline(conn, wf=22, n=30, script_target="tests.actors.faults:raise_always",
                      script_max_attempts=50)
    conn.execute("UPDATE interp.actors SET params = '{\"breaker_threshold\": 3, "
                 "\"breaker_cooldown_s\": 3600}' WHERE name = 'script_22'")
    stop = threading.Event()
    runner = Runner(db, 22, RunOptions(poll_s=0.05, batch_size=5), stop=stop)
    # When the lane asked to claim the script step and its breaker said no.
    refused: list[float] = []
    lane_allows = runner.breaker.allows

    def allows(step):
        n = lane_allows(step)
        if step.number == 2 and n == 0:
            refused.append(time.monotonic())
        return n

    runner.breaker.allows = allows
    t = threading.Thread(target=runner.run)
    t.start()
    try:
        wait_for(lambda: conn.execute(
            "SELECT state FROM interp.actor_health WHERE actor = 'script_22'"
        ).fetchone() == {"state": "open"}, what="the breaker to open")
        # Every subject is now at the script step and claimable (the failed ones' retry
        # backoff has passed) ...
        wait_for(lambda: conn.execute(
            "SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 22 AND step = 2 "
            "AND status = 'ready' AND next_attempt_at <= now()").fetchone()["n"] == 30,
            what="every subject to be claimable at step 2")
        claimable = time.monotonic()
        # ... and the lane has come to the step since then and been held back.
        wait_for(lambda: any(r > claimable for r in refused),
                   what="the lane to be held back by the open breaker")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    health = conn.execute("SELECT * FROM interp.actor_health WHERE actor = 'script_22'"
                          ).fetchone()
    assert health["state"] == "open" and health["consecutive_failures"] >= 3
    # one wave of 5 failed and opened it; nobody was dead-lettered, the rest wait
    states = conn.execute("SELECT status, count(*) AS n FROM interp.subject_state "
                          "WHERE workflow_id = 22 GROUP BY 1").fetchall()
    assert {r["status"] for r in states} == {"ready"}
    failed = conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 22 "
                          "AND step = 2").fetchone()["n"]
    assert failed == 5


def test_half_open_probe_closes_the_breaker(db, conn):
    standard_pipeline(conn, wf=23, n=10)
    conn.execute("UPDATE interp.actors SET params = '{\"breaker_cooldown_s\": 0.2}' "
                 "WHERE name = 'script_23'")
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, opened_at)"
                 " VALUES ('script_23', 'open', 5, now() - interval '1 second')")
    run(db, 23, batch_size=100)
    waves = [r["size"] for r in conn.execute(
        "SELECT size FROM interp.waves WHERE workflow_id = 23 AND step = 2 ORDER BY wave_id")]
    assert waves[0] == 1  # the probe went alone
    assert conn.execute("SELECT state FROM interp.actor_health WHERE actor = 'script_23'"
                        ).fetchone()["state"] == "closed"
    assert check_invariants(conn, 23, effect_step=3) == {}


def test_zombie_with_expired_lease_commits_nothing(db, conn):
    standard_pipeline(conn, wf=24, n=3)
    runner = Runner(db, 24, RunOptions(lease_s=1))
    runner.run_id = None  # no run row: waves record NULL
    runner.admit(None)
    runner.cheap_lane.run_wave(runner.wf.steps[1], 100)  # gate: all go to step 2
    wave = runner.store.claim(runner.wf.steps[2], 100, with_rows=True)
    assert wave is not None
    results = kind_of("script").run_wave(runner.wf.actor_of(runner.wf.steps[2]), wave.step,
                                         wave.subjects)
    conn.execute("UPDATE interp.subject_state SET lease_expires = now() - interval '1 second' "
                 "WHERE workflow_id = 24")
    assert runner.store.commit(wave, results, 0.0) == 0
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 24 "
                        "AND step = 2").fetchone()["n"] == 0
    # another worker reclaims and finishes; the zombie's wave never lands
    run(db, 24)
    assert check_invariants(conn, 24, effect_step=3) == {}


def test_pause_stops_claiming_and_resume_continues(db, conn):
    standard_pipeline(conn, wf=25, n=40, script_target="tests.actors.faults:slow",
                      script_params={"seconds": 0.02})
    stop = threading.Event()
    runner = Runner(db, 25, RunOptions(poll_s=0.05, batch_size=5), stop=stop)
    # The lane looks at the pause between waves: once it has seen it, the wave it had
    # in flight is committed and it claims no other (the only thread that writes
    # checkpoints here), so the count below is taken when nothing can still land.
    lane_saw_pause = threading.Event()
    lane_paused = runner.lifecycle.paused

    def paused():
        p = lane_paused()
        if p:
            lane_saw_pause.set()
        return p

    runner.lifecycle.paused = paused
    t = threading.Thread(target=runner.run)
    t.start()
    try:
        wait_for(lambda: conn.execute(
            "SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 25 AND step = 2"
        ).fetchone()["n"] > 0, what="the run to be under way")
        conn.execute("UPDATE interp.workflows SET paused = true WHERE workflow_id = 25")
        wait_for(lane_saw_pause.is_set, what="the lane to see the pause")
        before = conn.execute("SELECT count(*) AS n FROM interp.checkpoints "
                              "WHERE workflow_id = 25").fetchone()["n"]
        time.sleep(1.0)  # time enough for several waves, were it still claiming
        after = conn.execute("SELECT count(*) AS n FROM interp.checkpoints "
                             "WHERE workflow_id = 25").fetchone()["n"]
        assert before == after, "a paused workflow must not make progress"
        left = conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 25"
                            " AND status NOT IN ('done', 'dead')").fetchone()["n"]
        assert left > 0, "the pause came after the end: nothing was held"
        conn.execute("UPDATE interp.workflows SET paused = false WHERE workflow_id = 25")
        wait_for(lambda: conn.execute(
            "SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 25"
            " AND status NOT IN ('done', 'dead')").fetchone()["n"] == 0,
            what="the resumed run to finish")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert check_invariants(conn, 25, effect_step=3) == {}


def test_invalid_definition_is_refused_before_the_run(db, conn):
    add_items(conn, 2)
    make_workflow(conn, 26, steps=[{"number": 1, "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL}],
                  transitions=[(1, "RUN", 7), (1, "SKIP", None)])
    with pytest.raises(DefinitionError, match="missing step 7"):
        run(db, 26)
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints").fetchone()["n"] == 0


def test_edit_during_run_bumps_version(db, conn):
    standard_pipeline(conn, wf=27, n=2)
    v1 = conn.execute("SELECT version FROM interp.workflows WHERE workflow_id = 27"
                      ).fetchone()["version"]
    conn.execute("UPDATE interp.steps SET timeout_s = 10 WHERE workflow_id = 27")
    v2 = conn.execute("SELECT version FROM interp.workflows WHERE workflow_id = 27"
                      ).fetchone()["version"]
    assert v2 > v1
    s = run(db, 27)
    recorded = conn.execute("SELECT definition_version FROM interp.runs WHERE run_id = %s",
                            (s.run_id,)).fetchone()["definition_version"]
    assert recorded == v2


def test_two_concurrent_workers_never_double_process(cli, conn, tmp_path):
    # Each worker's first script wave waits until the other worker has one too (a
    # barrier, 60 s at most), so both take part however late one of them starts,
    # and they claim from the same queue at the same time.
    standard_pipeline(conn, wf=30, n=600, script_target="tests.actors.waits:meet",
                      script_params={"dir": str(tmp_path / "met"), "parties": 2,
                                     "cap_s": 60})
    conn.execute("UPDATE interp.steps SET timeout_s = 120 WHERE workflow_id = 30 "
                 "AND execution_order = 2")  # longer than the barrier's cap
    procs = [cli.popen("run", "--workflow", "30", "--until-idle", "--batch-size", "20",
                       "--poll", "0.05") for _ in range(2)]
    try:
        for p in procs:
            assert p.wait(180) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert check_invariants(conn, 30, effect_step=3) == {}
    workers = conn.execute("SELECT count(DISTINCT worker_id) AS n FROM interp.checkpoints "
                           "WHERE workflow_id = 30 AND step = 2").fetchone()["n"]
    assert workers == 2, "both workers ran script waves (the barrier met)"


def test_kill_nine_at_random_points_then_resume(cli, conn):
    # Enough work (about 10 s of actor time) that every round has something to kill.
    standard_pipeline(conn, wf=31, n=1500, script_target="tests.actors.faults:slow",
                      script_params={"seconds": 0.007})
    rng = random.Random(31)
    kills = 0
    for _ in range(7):
        p = cli.popen("run", "--workflow", "31", "--until-idle", "--batch-size", "25",
                      "--lease", "2", "--poll", "0.05")
        time.sleep(rng.uniform(0.8, 2.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(30)
    assert kills >= 5
    time.sleep(2.1)  # leases of the killed workers run out
    cli("run", "--workflow", "31", "--until-idle", "--lease", "2", "--poll", "0.05")
    assert check_invariants(conn, 31, effect_step=3) == {}
    done = conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 31 "
                        "AND status = 'done'").fetchone()["n"]
    assert done == 1500


def test_sigterm_finishes_the_wave_and_exits_zero(cli, conn, tmp_path):
    # Every script wave waits for a file the test creates, so a wave is surely in
    # flight when SIGTERM lands, and ends only once the worker has taken the signal.
    release = tmp_path / "release"
    standard_pipeline(conn, wf=32, n=300, script_target="tests.actors.waits:until_file",
                      script_params={"path": str(release), "cap_s": 60})
    p = cli.popen("run", "--workflow", "32", "--batch-size", "10", "--poll", "0.05",
                  stderr=subprocess.PIPE)
    stderr: list[str] = []
    took_signal = threading.Event()

    def read_stderr():
        for line in p.stderr:
            stderr.append(line)
            if "stopping after the current wave (SIGTERM)" in line:
                took_signal.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # A leased wave: the run is recorded and its signal handlers are in place.
        wait_for(lambda: p.poll() is not None or conn.execute(
            "SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 32 "
            "AND status = 'leased'").fetchone()["n"] > 0, what="a leased wave")
        assert p.poll() is None, "".join(stderr)
        in_flight = {r["subject_id"] for r in conn.execute(
            "SELECT subject_id FROM interp.subject_state WHERE workflow_id = 32 "
            "AND status = 'leased'")}
        p.send_signal(signal.SIGTERM)
        wait_for(lambda: took_signal.is_set() or p.poll() is not None, what="the signal taken")
        release.touch()  # the wave in flight may end now
        assert p.wait(60) == 0, "".join(stderr)
    finally:
        release.touch()
        if p.poll() is None:
            p.kill()
            p.wait()
        reader.join(10)
    assert took_signal.is_set(), "".join(stderr)
    leased = conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 32 "
                          "AND status = 'leased'").fetchone()["n"]
    assert leased == 0
    # The wave in flight was finished, not given back, and no other was started.
    done = {r["subject_id"] for r in conn.execute(
        "SELECT subject_id FROM interp.checkpoints WHERE workflow_id = 32 AND step = 2 AND ok")}
    assert len(in_flight) == 10 and done == in_flight
    status = conn.execute("SELECT status FROM interp.runs WHERE workflow_id = 32").fetchone()
    assert status["status"] == "stopped"


def test_effect_sql_is_exactly_once_under_rerun(db, conn):
    standard_pipeline(conn, wf=33, n=20)
    run(db, 33)
    run(db, 33)
    assert conn.execute("SELECT max(n) AS m FROM public.effects").fetchone()["m"] == 1
    assert COUNT_EFFECT_SQL  # the counter the invariant reads


def test_quick_script_actor_runs_inline(db, conn):
    standard_pipeline(conn, wf=34, n=12, script_target="tests.actors.faults:fail_marked",
                      script_params={"inline": True}, script_max_attempts=1)
    conn.execute("UPDATE public.items SET title = 'BOOM' WHERE id = 7")
    run(db, 34, batch_size=5, breaker_threshold=1000)
    states = {r["subject_id"]: r["status"] for r in conn.execute(
        "SELECT subject_id, status FROM interp.subject_state WHERE workflow_id = 34")}
    assert states.pop("7") == "dead"
    assert set(states.values()) == {"done"}
    # inline waves take no lease: no subject was ever written as leased, and each wave
    # row was recorded once, complete
    waves = conn.execute("SELECT size, committed, finished_at FROM interp.waves "
                         "WHERE workflow_id = 34 AND step = 2").fetchall()
    assert sum(w["size"] for w in waves) == 12
    assert all(w["committed"] == w["size"] and w["finished_at"] for w in waves)
    assert check_invariants(conn, 34, effect_step=3) == {}


def test_rerun_after_deleting_state_keeps_old_checkpoints(db, conn):
    """Ops re-run subjects by deleting their state: the old checkpoints stay, and the
    new visits count on after them instead of colliding."""
    standard_pipeline(conn, wf=35, n=5)
    run(db, 35)
    conn.execute("DELETE FROM interp.subject_state WHERE workflow_id = 35")
    conn.execute("UPDATE public.items SET done = true WHERE id <= 2")
    run(db, 35)
    rows = conn.execute("SELECT subject_id, step, visit, outcome FROM interp.checkpoints "
                        "WHERE workflow_id = 35 AND subject_id = '1' ORDER BY visit").fetchall()
    assert [(r["step"], r["visit"], r["outcome"]) for r in rows] == [
        (1, 0, "RUN"), (2, 1, "DONE"), (3, 2, "DONE"), (1, 3, "SKIP")]
    assert conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 35 "
                        "AND status = 'done'").fetchone()["n"] == 5
