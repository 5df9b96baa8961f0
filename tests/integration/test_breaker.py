"""The circuit breaker against a real PostgreSQL: judged by failed subjects over a
window, settings from the actor's params, one half-open probe at a time (held
like a lease), a model lane that goes on past a step held back by another
worker's probe, an open breaker with nothing behind it that is not an alert,
and closing one by hand."""

from __future__ import annotations

import json
import threading
import time

from interpreter.breaker import reset_breaker
from interpreter.engine import Runner, RunOptions
from tests.helpers import REPO_ROOT, add_items, make_workflow, standard_pipeline, wait_for


def run(db, wf, **kw):
    return Runner(db, wf, RunOptions(until_idle=True, poll_s=0.05, **kw)).run()


def health(conn, actor):
    return conn.execute("SELECT * FROM interp.actor_health WHERE actor = %s", (actor,)).fetchone()




def one_good_among_many_failing(db, conn, wf, actor_params=None, step_params=None):
    """One wave of 40 subjects in which 39 make the actor fail and one succeeds."""
    add_items(conn, 40, title="BOOM {i}")
    conn.execute("UPDATE public.items SET title = 'fine' WHERE id = 40")
    make_workflow(conn, wf,
                  actors=[{"name": f"flaky_{wf}", "kind": "script",
                           "target": "tests.actors.faults:fail_marked",
                           "params": {"breaker_cooldown_s": 3600, **(actor_params or {})}}],
                  steps=[{"number": 1, "actor": f"flaky_{wf}", "max_attempts": 1,
                          "params": step_params or {}}],
                  transitions=[(1, "*", None)])
    run(db, wf, batch_size=40)


def test_a_wave_with_one_success_does_not_reset_an_actor_failing_almost_always(db, conn):
    one_good_among_many_failing(db, conn, 80)
    waves = conn.execute("SELECT count(*) AS n FROM interp.waves WHERE workflow_id = 80"
                         ).fetchone()["n"]
    assert waves == 1  # the 39 failures and the success were judged together
    h = health(conn, "flaky_80")
    assert h["state"] == "open"
    assert h["consecutive_failures"] >= 5


def test_breaker_settings_are_the_actors_params(db, conn):
    one_good_among_many_failing(db, conn, 81, actor_params={"breaker_threshold": 45,
                                                        "breaker_window": 50})
    h = health(conn, "flaky_81")
    assert h["state"] == "closed" and h["consecutive_failures"] == 39


def test_a_steps_params_do_not_set_the_actors_breaker(db, conn):
    one_good_among_many_failing(db, conn, 82, step_params={"breaker_threshold": 45})
    assert health(conn, "flaky_82")["state"] == "open"


def test_one_half_open_probe_at_a_time_even_when_the_probe_hangs(db, conn, tmp_path):
    # The probe hangs until the test lets it go (a file it creates once it has looked),
    # not for a fixed time that a slow machine could use up before the look.
    release = tmp_path / "release"
    standard_pipeline(conn, wf=83, n=10, script_target="tests.actors.waits:until_file",
                      script_params={"path": str(release), "cap_s": 60,
                                     "breaker_cooldown_s": 0.1})
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, opened_at)"
                 " VALUES ('script_83', 'open', 5, now() - interval '1 hour')")
    stops = [threading.Event(), threading.Event()]
    runners = [Runner(db, 83, RunOptions(poll_s=0.05, lease_s=1.5), stop=s) for s in stops]
    threads = [threading.Thread(target=r.run) for r in runners]
    # When the second worker asked for the probe and was refused (allows() == 0 for a
    # half-open breaker is the database's answer, not a cool-down).
    refused: list[float] = []
    second_allows = runners[1].breaker.allows

    def allows(step):
        n = second_allows(step)
        if step.number == 2 and n == 0:
            refused.append(time.monotonic())
        return n

    runners[1].breaker.allows = allows
    threads[0].start()
    try:
        wait_for(lambda: conn.execute("SELECT count(*) AS n FROM interp.subject_state "
                                      "WHERE workflow_id = 83 AND status = 'leased'"
                                      ).fetchone()["n"] == 1, timeout=60, what="the probe wave")
        taken = time.monotonic()
        threads[1].start()
        # Twice the lease with the probe still in flight (it waits for the file): a
        # probe that nothing renews would be taken over by the second worker by now,
        # and the second worker has asked since then (however slowly it started).
        wait_for(lambda: any(t >= taken + 3.0 for t in refused), timeout=60,
                 what="the second worker to ask for the probe after twice the lease")
        waves = conn.execute("SELECT size FROM interp.waves WHERE workflow_id = 83 AND step = 2"
                             ).fetchall()
        h = health(conn, "script_83")
        assert [w["size"] for w in waves] == [1]
        assert h["state"] == "half_open" and h["probe_owner"] == runners[0].worker_id
    finally:
        release.touch()  # the probe ends now, and succeeds
        for s in stops:
            s.set()
        for t in threads:
            if t.ident is not None:  # started
                t.join(60)
    assert not any(t.is_alive() for t in threads)
    # the probe succeeded when it was let go: closed
    assert health(conn, "script_83")["state"] == "closed"


def test_a_probe_that_claims_nothing_is_given_back(db, conn):
    standard_pipeline(conn, wf=84, n=3)
    conn.execute("UPDATE interp.actors SET params = '{\"breaker_cooldown_s\": 0.1}' "
                 "WHERE name = 'script_84'")
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, opened_at)"
                 " VALUES ('script_84', 'open', 5, now() - interval '1 hour')")
    first = Runner(db, 84, RunOptions(poll_s=0.05))
    first.run_id = None
    step = first.wf.steps[2]
    first.breaker.refresh()
    assert first.breaker.allows(step) == 1  # took the probe (nothing is at step 2 yet)
    first.cheap_lane.drain(step, 1)        # claims nothing, so the probe is given back
    h = health(conn, "script_84")
    assert h["state"] == "open" and h["probe_owner"] is None
    second = Runner(db, 84, RunOptions(poll_s=0.05))
    second.breaker.refresh()
    assert second.breaker.allows(step) == 1  # at once, not a lease period later


def model_steps(conn, wf):
    """Two model steps on the same model; the model is never loaded here."""
    add_items(conn, 6)
    conn.execute("INSERT INTO interp.models (name, source) VALUES ('m85', '/nonexistent.gguf')")
    for name in ("held85", "free85"):
        conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                     "(%s, 'model', 'm85', '{\"breaker_cooldown_s\": 0}')", (name,))
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t85', '{{ title }}')")
    make_workflow(conn, wf, steps=[{"number": 1, "actor": "free85", "template": "t85"},
                                   {"number": 2, "actor": "held85", "template": "t85"}],
                  transitions=[(1, "*", 2), (2, "*", None)])


def test_model_lane_goes_on_past_a_step_waiting_for_another_workers_probe(db, conn):
    model_steps(conn, 85)
    runner = Runner(db, 85, RunOptions(poll_s=0.05))
    runner.run_id = None
    runner.admit(None)
    conn.execute("UPDATE interp.subject_state SET step = 2 WHERE workflow_id = 85 "
                 "AND subject_id IN ('1', '2', '3')")
    # Another worker is probing step 1's actor right now (renewed a moment ago).
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, opened_at,"
                 " probe_owner, updated_at) VALUES ('held85', 'half_open', 5, "
                 "now() - interval '1 hour', 'other-worker', now())")
    runner.breaker.refresh()
    # The lane prefers step 2 (the latest), which may claim nothing now ...
    assert runner.model_lane.pick_step(runner.store.ready_steps(cap=100)).number == 2
    wave = runner.model_lane.claim_next()
    # ... so it takes the healthy step on the same model instead of idling.
    assert wave is not None and wave.step.number == 1
    assert sorted(s.id for s in wave.subjects) == ["4", "5", "6"]
    assert health(conn, "held85")["probe_owner"] == "other-worker"


def test_an_open_breaker_with_nothing_waiting_is_not_an_alert(db, conn, cli):
    # The actor is shared: workflow 86's last subjects trip its breaker ...
    add_items(conn, 10)
    conn.execute("UPDATE public.items SET title = 'BOOM' WHERE id > 6")
    actor = {"name": "shared86", "kind": "script", "target": "tests.actors.faults:fail_marked",
             "params": {"breaker_threshold": 3, "breaker_cooldown_s": 3600}}
    make_workflow(conn, 86, actors=[actor], steps=[{"number": 1, "actor": "shared86"}],
                  transitions=[(1, "*", None)],
                  admit_sql="SELECT id AS subject_id FROM public.items WHERE title <> 'BOOM'")
    make_workflow(conn, 87, actors=[actor],
                  steps=[{"number": 1, "actor": "shared86", "max_attempts": 1}],
                  transitions=[(1, "*", None)],
                  admit_sql="SELECT id AS subject_id FROM public.items WHERE title = 'BOOM'")
    cli("run", "--workflow", "86", "--until-idle")
    cli("run", "--workflow", "87", "--until-idle")
    assert health(conn, "shared86")["state"] == "open"
    # ... workflow 86 ran clean and nothing waits at its step: healthy.
    ok = cli("status", "--workflow", "86", "--check", check=False)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(cli("status", "--workflow", "86", "--json").stdout)
    assert data["open_breakers"] == ["shared86"] and data["alerts"] == []
    # Once subjects wait behind it, it is an alert again.
    add_items(conn, 2, start=11)
    conn.execute("INSERT INTO interp.subject_state (workflow_id, subject_id, step) "
                 "VALUES (86, '11', 1), (86, '12', 1)")
    held = cli("status", "--workflow", "86", "--check", check=False)
    assert held.returncode == 3 and "breaker open for actor shared86" in held.stderr


def test_reset_breaker_closes_it_by_hand(db, conn):
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, recent, "
                 "opened_at, probe_owner, last_error) VALUES ('stuck', 'half_open', 7, 'FFFFFFF', "
                 "now(), 'gone-worker', 'it broke')")
    assert reset_breaker(db, "stuck") is True
    h = health(conn, "stuck")
    assert (h["state"], h["consecutive_failures"], h["recent"], h["opened_at"],
            h["probe_owner"]) == ("closed", 0, "", None, None)
    assert h["last_error"] == "it broke"  # kept, for the record
    assert reset_breaker(db, "never-failed") is False


def test_the_documented_sql_line_closes_a_breaker(conn):
    line = ("UPDATE interp.actor_health SET state = 'closed', consecutive_failures = 0, "
            "recent = '', opened_at = NULL, probe_owner = NULL, updated_at = now() "
            "WHERE actor = 'ACTOR';")
    assert line in (REPO_ROOT / "docs" / "running.md").read_text()
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, recent, "
                 "opened_at) VALUES ('ACTOR', 'open', 5, 'FFFFF', now())")
    conn.execute(line)
    assert health(conn, "ACTOR")["state"] == "closed"


def test_breaker_reset_command_closes_it_by_hand(conn, cli):
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, recent, "
                 "opened_at, last_error) VALUES ('stuck', 'open', 5, 'FFFFF', now(), 'it broke')")
    res = cli("breaker", "reset", "stuck")
    assert "breaker of actor stuck closed" in res.stderr
    assert health(conn, "stuck")["state"] == "closed"
    res = cli("breaker", "reset", "never-failed")
    assert res.returncode == 0 and "nothing to close" in res.stderr
    assert "Example:" in cli("breaker", "reset", "--help").stdout
