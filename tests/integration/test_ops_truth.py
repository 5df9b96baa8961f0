"""What ops see matches what happened: distinct subjects through loops, lost runs,
stalls of leased steps and of deleted steps, the database clock, model loads, and
the prompt behind each model checkpoint."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from interpreter.actor_api import StepResult
from interpreter.definitions import load_workflow
from interpreter.engine import Runner, RunOptions
from interpreter.ops.prune import prune
from interpreter.ops.status import render_status, status_data
from interpreter.ops.trace import render_trace, trace_data
from interpreter.queries import Q
from interpreter.wave_rules import Claimed, build_commit
from tests.helpers import add_items, make_workflow

LOOP_GATE = """
SELECT s.id AS subject_id,
       CASE WHEN (SELECT count(*) FROM interp.checkpoints c
                   WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = s.id
                     AND c.step = 1 AND c.ok) < 3 THEN 'AGAIN' ELSE 'END' END AS outcome
  FROM unnest(%(ids)s::text[]) AS s(id)
"""


def run(db, wf, **kw):
    return Runner(db, wf, RunOptions(until_idle=True, poll_s=0.05, **kw)).run()


def steps_by_number(data):
    return {s["step"]: s for s in data["steps"]}


def loop_workflow(conn, wf: int = 80, n: int = 5) -> None:
    """Step 1 (script) -> step 2 (gate): AGAIN back to 1 until step 1 passed 3 times."""
    add_items(conn, n)
    make_workflow(conn, wf,
                  actors=[{"name": "ok_loop", "kind": "script",
                           "target": "tests.actors.faults:ok"}],
                  steps=[{"number": 1, "name": "Work", "actor": "ok_loop"},
                         {"number": 2, "name": "Again?", "kind": "gate", "gate_sql": LOOP_GATE}],
                  transitions=[(1, "*", 2), (2, "AGAIN", 1), (2, "*", None)])


# ---------------------------------------------------------------- distinct subjects

def test_done_counts_each_subject_once_however_often_it_loops(db, conn):
    loop_workflow(conn, n=5)
    run(db, 80)
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 80 "
                        "AND step = 1 AND ok").fetchone()["n"] == 15
    s = steps_by_number(status_data(conn, 80))
    assert (s[1]["done"], s[1]["reached"]) == (5, 5)
    assert (s[2]["done"], s[2]["reached"]) == (5, 5)
    # by_outcome still counts checkpoints (every pass)
    assert s[1]["by_outcome"] == {"DONE": 15}
    assert s[2]["by_outcome"] == {"AGAIN": 10, "END": 5}
    assert "100%" in render_status(status_data(conn, 80))
    # a rebuild from the raw checkpoints agrees with the incremental rollup
    conn.execute("SELECT interp.rebuild_ops_rollups()")
    s = steps_by_number(status_data(conn, 80))
    assert (s[1]["done"], s[2]["done"]) == (5, 5)


def test_a_subject_back_at_a_step_never_pushes_done_over_reached(db, conn):
    loop_workflow(conn, n=3)
    run(db, 80, limit=3)
    # send subject 1 round again: it waits at step 1, which it passed before
    conn.execute("UPDATE interp.subject_state SET status = 'ready', step = 1 "
                 "WHERE workflow_id = 80 AND subject_id = '1'")
    s = steps_by_number(status_data(conn, 80))[1]
    assert s["done"] == 3 and s["waiting"] == 1
    assert s["done"] <= s["reached"]


# ---------------------------------------------------------------- lost runs

def add_run(conn, run_id: int, wf: int, heartbeat_ago: str, lease_s: float | None = 60,
            status: str = "running") -> None:
    args = json.dumps({"lease_s": lease_s} if lease_s is not None else {})
    conn.execute("""
        INSERT INTO interp.runs (run_id, workflow_id, worker_id, host, pid, definition_version,
                                 args, started_at, heartbeat_at, status)
        VALUES (%s, %s, 'w-' || %s, 'h', 1, 1, %s, now() - interval '1 hour',
                now() - %s::interval, %s)""",
                 (run_id, wf, run_id, args, heartbeat_ago, status))


def test_a_run_whose_heartbeat_is_older_than_its_lease_is_lost(db, conn):
    loop_workflow(conn, n=2)
    add_run(conn, 901, 80, "10 minutes")            # killed with SIGKILL long ago
    add_run(conn, 902, 80, "5 seconds")             # alive
    add_run(conn, 903, 80, "3 minutes", lease_s=600)  # slow beats, long lease: alive
    add_run(conn, 904, 80, "10 minutes", status="finished")
    runs = {r["run_id"]: r["status"] for r in status_data(conn, 80)["runs"]}
    assert runs == {901: "lost", 902: "running", 903: "running", 904: "finished"}
    # its wall time (and so its duty cycle) ends at its last heartbeat
    lane = conn.execute("SELECT status, wall_ms FROM interp.model_lane WHERE run_id = 901"
                        ).fetchone()
    assert lane["status"] == "lost"
    assert lane["wall_ms"] == pytest.approx(50 * 60 * 1000, rel=0.01)
    # the next worker that reaps leases records it
    run(db, 80)
    stored = {r["run_id"]: r["status"] for r in conn.execute(
        "SELECT run_id, status FROM interp.runs WHERE run_id BETWEEN 901 AND 904")}
    assert stored == {901: "lost", 902: "running", 903: "running", 904: "finished"}
    # a run interp starts records its lease, so readers judge it by its own
    args = conn.execute("SELECT args FROM interp.runs WHERE run_id NOT BETWEEN 901 AND 904"
                        ).fetchone()["args"]
    assert args["lease_s"] == 60.0


# ---------------------------------------------------------------- stalls

def leased_at_step(conn, wf: int, ids: range, leased_ago: str) -> None:
    conn.execute("""
        INSERT INTO interp.subject_state (workflow_id, subject_id, step, status, lease_owner,
                                          lease_expires, wave_id, updated_at)
        SELECT %s, i::text, 1, 'leased', 'w-alive', now() + interval '1 minute', 1,
               now() - %s::interval
          FROM unnest(%s::int[]) i""", (wf, leased_ago, list(ids)))


def test_a_step_leased_for_longer_than_the_window_without_a_checkpoint_is_stalled(conn):
    loop_workflow(conn, n=3)
    leased_at_step(conn, 80, range(1, 4), "20 minutes")
    data = status_data(conn, 80, stall_window_s=600)
    s = steps_by_number(data)[1]
    assert s["leased"] == 3 and s["stalled"] and s["state"] == "stalled"
    assert data["stalled_steps"] == [1]
    assert not data["healthy"]
    # a wave claimed within the window is not a stall
    conn.execute("UPDATE interp.subject_state SET updated_at = now() - interval '1 minute' "
                 "WHERE workflow_id = 80 AND subject_id = '3'")
    assert status_data(conn, 80, stall_window_s=600)["stalled_steps"] == []


def test_subjects_at_a_step_that_no_longer_exists_are_shown(conn):
    loop_workflow(conn, n=4)
    conn.execute("""
        INSERT INTO interp.subject_state (workflow_id, subject_id, step, status)
        SELECT 80, i::text, 7, 'ready' FROM generate_series(1, 4) i""")
    data = status_data(conn, 80)
    s = steps_by_number(data)
    assert 7 in s
    assert (s[7]["waiting"], s[7]["state"], s[7]["stalled"]) == (4, "missing step", True)
    assert any("step 7, which no longer exists" in a for a in data["alerts"])
    assert "missing step" in render_status(data)
    rows = conn.execute("SELECT step FROM interp.stalled_steps() WHERE workflow_id = 80"
                        ).fetchall()
    assert [r["step"] for r in rows] == [7]


def test_checkpoint_times_come_from_the_database_clock(db, conn, monkeypatch):
    """A worker whose clock is an hour behind still writes checkpoints at the
    database's now(), so velocity and stall detection see them as recent."""
    import interpreter.scripts
    import interpreter.wave_store

    def behind() -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    monkeypatch.setattr(interpreter.scripts, "utcnow", behind)
    monkeypatch.setattr(interpreter.wave_store, "utcnow", behind)
    loop_workflow(conn, n=3)
    run(db, 80)
    skew = conn.execute("""
        SELECT max(abs(extract(epoch FROM now() - finished_at))) AS s,
               bool_and(started_at <= finished_at) AS ordered
          FROM interp.checkpoints WHERE workflow_id = 80""").fetchone()
    assert skew["s"] < 120 and skew["ordered"]
    s = steps_by_number(status_data(conn, 80, velocity_window_s=300))
    assert s[1]["velocity_per_min"] > 0


# ---------------------------------------------------------------- model lane

def test_a_load_that_a_switch_caused_is_counted_once(conn):
    loop_workflow(conn, n=1)
    add_run(conn, 950, 80, "1 second")
    conn.execute("""
        INSERT INTO interp.model_events (run_id, worker_id, event, model, from_model,
                                         duration_ms, at)
        VALUES (950, 'w', 'load', 'm1', NULL, 1500, now() - interval '50 s'),
               (950, 'w', 'load', 'm2', NULL, 2500, now() - interval '40 s'),
               (950, 'w', 'switch', 'm2', 'm1', 2500, now() - interval '40 s'),
               (950, 'w', 'switch', 'm1', 'm2', 0, now() - interval '30 s')""")
    lane = conn.execute("SELECT loads, load_ms, switches, loaded_model FROM interp.model_lane "
                        "WHERE run_id = 950").fetchone()
    assert (lane["loads"], lane["load_ms"], lane["switches"]) == (2, 4000, 2)
    assert lane["loaded_model"] == "m1"


# ---------------------------------------------------------------- prompts

def commit_model_results(conn, wf: int, step: int, results: list[StepResult]) -> None:
    """Writes results with the wave store's statement (commit_results), as a model wave's
    commit does."""
    workflow = load_workflow(conn, wf)
    claimed = {r.subject_id: Claimed(r.subject_id, 0, 0) for r in results}
    cols = build_commit(workflow, workflow.steps[step], claimed, results)
    conn.execute(Q["commit_results"], {**cols, "workflow_id": wf, "step": step, "wave_id": 1,
                                       "run_id": None, "worker_id": "w",
                                       "sent_at": dt.datetime.now(dt.UTC)})


def model_result(subject_id: str, system: str | None, user: str) -> StepResult:
    body = json.dumps([system, user], ensure_ascii=False)
    audit = {"model": "m1", "seed": 1, "prompt": body,
             "prompt_sha256": hashlib.sha256(body.encode()).hexdigest()}
    return StepResult(subject_id, True, "DONE", output={"text": "hi"}, audit=audit)


def test_the_audit_keeps_each_prompt_once_and_prune_drops_unused_ones(db, conn, cli):
    loop_workflow(conn, n=3)
    conn.execute("INSERT INTO interp.subject_state (workflow_id, subject_id, step, status) "
                 "SELECT 80, i::text, 1, 'ready' FROM generate_series(1, 3) i")
    same = "Summarise: the same posting"
    commit_model_results(conn, 80, 1, [model_result("1", "Be brief.", same),
                                       model_result("2", "Be brief.", same),
                                       model_result("3", None, "Summarise: «three»")])
    assert conn.execute("SELECT count(*) AS n FROM interp.prompts").fetchone()["n"] == 2
    data = trace_data(conn, 80, "1", prompts=True)
    sha = data["checkpoints"][0]["prompt_sha256"]
    assert sha == hashlib.sha256(json.dumps(["Be brief.", same]).encode()).hexdigest()
    assert data["prompts"] == {sha: {"system": "Be brief.", "user": same}}
    text = render_trace(data)
    assert "[system]\nBe brief." in text and f"[user]\n{same}" in text
    assert "prompts" not in trace_data(conn, 80, "1")
    shown = cli("trace", "--workflow", "80", "--subject", "1", "--prompts").stdout
    assert "[system]\nBe brief." in shown and f"[user]\n{same}" in shown
    assert "[user]" not in cli("trace", "--workflow", "80", "--subject", "1").stdout
    three = trace_data(conn, 80, "3", prompts=True)
    assert list(three["prompts"].values()) == [{"system": None, "user": "Summarise: «three»"}]

    # Subjects 1 and 3 end, with a newer checkpoint at step 1; their old ones go.
    conn.execute("UPDATE interp.checkpoints SET finished_at = now() - interval '40 days', "
                 "started_at = now() - interval '40 days' WHERE workflow_id = 80")
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, started_at, finished_at)
        SELECT 80, s, 1, 5, 1, true, 'DONE', now(), now() FROM unnest('{1,3}'::text[]) s""")
    conn.execute("UPDATE interp.subject_state SET status = 'done', step = NULL "
                 "WHERE workflow_id = 80 AND subject_id IN ('1', '3')")
    result = prune(db, 80, dt.timedelta(days=30))
    assert result["deleted"] == 2
    # subject 3's prompt is gone; the shared one stays while subject 2 uses it
    assert result["prompts_deleted"] == 1
    left = {r["sha256"] for r in conn.execute("SELECT sha256 FROM interp.prompts")}
    assert left == {sha}
    assert trace_data(conn, 80, "2", prompts=True)["prompts"] == {
        sha: {"system": "Be brief.", "user": same}}


@pytest.mark.model
def test_a_model_checkpoint_keeps_the_prompt_it_was_asked(db, conn, smollm2):
    """Through the whole engine with the real SmolLM2: the rendered prompt reaches
    the commit, and its text is stored under the sha256 the checkpoint records."""
    add_items(conn, 2, title="Senior data engineer {i}")
    conn.execute("INSERT INTO interp.models (name, source, n_ctx) VALUES ('m_p', %s, 512)",
                 (str(smollm2),))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('actor_m_p', 'model', 'm_p', '{\"max_tokens\": 8, \"reask\": 0}')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES "
                 "('label_p', 'Give a one-word label for: {{ title }}')")
    make_workflow(conn, 81, steps=[{"number": 1, "actor": "actor_m_p", "template": "label_p"}],
                  transitions=[(1, "*", None)])
    run(db, 81)
    rows = conn.execute("""
        SELECT c.subject_id, c.prompt_sha256, p.body FROM interp.checkpoints c
          LEFT JOIN interp.prompts p ON p.sha256 = c.prompt_sha256
         WHERE c.workflow_id = 81 ORDER BY c.subject_id""").fetchall()
    assert len(rows) == 2
    for r in rows:
        assert r["body"] is not None
        assert hashlib.sha256(r["body"].encode()).hexdigest() == r["prompt_sha256"]
        assert json.loads(r["body"])[1] == (f"Give a one-word label for: "
                                            f"Senior data engineer {r['subject_id']}")
