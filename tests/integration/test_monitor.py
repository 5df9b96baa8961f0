"""The monitor, trace and prune against a synthetic workflow written with plain SQL.

`make_workflow` builds a 3-step workflow (steps 1, 2 and 10, so the step
column has to right-align) with subject_state rows and checkpoints whose
times are chosen so that velocity, ETA and stalls have known answers.
"""

from __future__ import annotations

import json
import re

import pytest

from interpreter.errors import NotFound
from interpreter.ops.figures import parse_age, percent
from interpreter.ops.status import render_status, status_data
from interpreter.ops.trace import trace_data

WF = 9001
SCRIPT_NAME = "Save <script>alert(1)</script>"


def make_workflow(conn, wf: int = WF, *, dead: int = 2, stale_step10: bool = True) -> None:
    """100 subjects; who is where (and the checkpoints that put them there):

    - s001-s020: step 1 SKIP -> done (ended)
    - s021-s060: 1 RUN, 2 PASS, 10 DONE -> done
    - s061-s080: 1 RUN, 2 PASS (recent), waiting at step 10
    - s081-s095: 1 RUN, waiting at step 2
    - s096-s098: 1 RUN, leased at step 2
    - s099-s100: 1 RUN, dead at step 2 after ERROR checkpoints (or waiting if dead=0)

    Step 1 checkpoints of s001-s050 are 40 days old, s051-s100 finished in the
    last 4 minutes (velocity). Step 2: 20 in the last 4 minutes.
    Step 10 checkpoints are 30 minutes old, and its waiting subjects have been
    due for 30 minutes: stalled under a 10-minute window (or fresh, when
    stale_step10 is False).
    """
    ago10 = "30 minutes" if stale_step10 else "1 minute"
    add_definition(conn, wf)
    add_subject_state(conn, wf, dead, ago10)
    add_checkpoints(conn, wf, dead, ago10)


def add_definition(conn, wf: int) -> None:
    """Steps 1 (gate), 2 (model) and 10 (SQL, with a name that is markup)."""
    conn.execute("""
        INSERT INTO interp.actors (name, kind, target) VALUES
            ('mon_gate', 'sql', 'SELECT 1'), ('mon_model', 'model', 'm1'),
            ('mon_save', 'sql', 'SELECT 1')
        ON CONFLICT DO NOTHING""")
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (%s, 'monitor test', 'public.postings', 'posting_id')", (wf,))
    conn.execute("""
        INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, gate_sql) VALUES
            (%(wf)s, 1, 'Check if Summary Exists', 'gate', NULL, 'SELECT 1'),
            (%(wf)s, 2, 'Extract summary', 'actor', 'mon_model', NULL),
            (%(wf)s, 10, %(name)s, 'actor', 'mon_save', NULL)""", {"wf": wf, "name": SCRIPT_NAME})
    conn.execute("""
        INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES
            (%(wf)s, 1, 'RUN', 2), (%(wf)s, 1, 'SKIP', NULL),
            (%(wf)s, 2, '*', 10), (%(wf)s, 10, '*', NULL)""", {"wf": wf})


def add_subject_state(conn, wf: int, dead: int, ago10: str) -> None:
    """subject_state as the engine leaves it (who is where: see make_workflow)."""
    conn.execute("""
        INSERT INTO interp.subject_state
               (workflow_id, subject_id, step, status, attempts, lease_owner, lease_expires,
                next_attempt_at, last_error)
        SELECT %(wf)s, 's' || lpad(i::text, 3, '0'),
               CASE WHEN i <= 60 THEN NULL WHEN i <= 80 THEN 10 ELSE 2 END,
               CASE WHEN i <= 60 THEN 'done' WHEN i <= 95 THEN 'ready'
                    WHEN i <= 98 THEN 'leased'
                    WHEN %(dead)s > 0 THEN 'dead' ELSE 'ready' END,
               CASE WHEN i >= 99 AND %(dead)s > 0 THEN 3 ELSE 0 END,
               CASE WHEN i BETWEEN 96 AND 98 THEN 'w1' END,
               CASE WHEN i BETWEEN 96 AND 98 THEN now() + interval '5 minutes' END,
               CASE WHEN i BETWEEN 61 AND 80 THEN now() - %(ago10)s::interval
                    ELSE now() - interval '1 minute' END,
               CASE WHEN i >= 99 AND %(dead)s > 0 THEN 'boom' END
          FROM generate_series(1, 100) i""", {"wf": wf, "dead": dead, "ago10": ago10})


def add_checkpoints(conn, wf: int, dead: int, ago10: str) -> None:
    """The checkpoints that put the subjects where they are (times: see make_workflow)."""
    # step 1: everyone; half long ago, half in the last 4 minutes
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, started_at, finished_at)
        SELECT %(wf)s, 's' || lpad(i::text, 3, '0'), 1, 1, 1, true,
               CASE WHEN i <= 20 THEN 'SKIP' ELSE 'RUN' END, t - interval '10 ms', t
          FROM (SELECT i, CASE WHEN i <= 50 THEN now() - interval '40 days' + i * interval '1 s'
                               ELSE now() - (100 - i) * interval '4 s' - interval '5 s' END AS t
                  FROM generate_series(1, 100) i) x""", {"wf": wf})
    # step 2: s021-s060 PASS 35 minutes ago, s061-s080 in the last 4 minutes;
    # s021 failed once first, 39 days ago
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, error, started_at, finished_at, model, model_sha256, seed,
               prompt_tokens, completion_tokens, gen_ms)
        SELECT %(wf)s, 's' || lpad(i::text, 3, '0'), 2, 1, 1, false, 'ERROR', 'timeout',
               now() - interval '39 days', now() - interval '39 days' + interval '2 s',
               'm1', repeat('a', 64), 7, 10, 0, 2000
          FROM generate_series(21, 21) i
        UNION ALL
        SELECT %(wf)s, 's' || lpad(i::text, 3, '0'), 2, 1, CASE WHEN i = 21 THEN 2 ELSE 1 END,
               true, 'PASS', NULL, t - interval '1 s', t, 'm1', repeat('a', 64), 7, 100, 20, 900
          FROM (SELECT i, CASE WHEN i <= 60 THEN now() - interval '35 minutes' + i * interval '1 s'
                               ELSE now() - (81 - i) * interval '10 s' END AS t
                  FROM generate_series(21, 80) i) x""", {"wf": wf})
    if dead:
        conn.execute("""
            INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
                   outcome, error, started_at, finished_at)
            SELECT %(wf)s, 's' || lpad(i::text, 3, '0'), 2, 1, a, false, 'ERROR', 'boom',
                   now() - interval '50 minutes' + a * interval '1 minute',
                   now() - interval '50 minutes' + a * interval '1 minute' + interval '1 s'
              FROM generate_series(99, 100) i, generate_series(1, 3) a""", {"wf": wf})
    # step 10: s021-s060 DONE, 30 minutes ago (or 1 minute)
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, started_at, finished_at)
        SELECT %(wf)s, 's' || lpad(i::text, 3, '0'), 10, 1, 1, true, 'DONE',
               now() - %(ago10)s::interval - interval '1 s', now() - %(ago10)s::interval
          FROM generate_series(21, 60) i""", {"wf": wf, "ago10": ago10})


def steps_by_number(data):
    return {s["step"]: s for s in data["steps"]}


def test_progress_counts(conn):
    make_workflow(conn)
    data = status_data(conn, WF)
    s = steps_by_number(data)
    assert [x["step"] for x in data["steps"]] == [1, 2, 10]
    assert (s[1]["done"], s[1]["reached"], s[1]["waiting"]) == (100, 100, 0)
    assert s[1]["by_outcome"] == {"RUN": 80, "SKIP": 20}
    assert (s[2]["done"], s[2]["waiting"], s[2]["leased"], s[2]["dead"]) == (60, 15, 3, 2)
    assert s[2]["reached"] == 80
    assert s[2]["errors"] == 1 + 6
    assert (s[10]["done"], s[10]["waiting"], s[10]["reached"]) == (40, 20, 60)
    t = data["totals"]
    assert (t["subjects"], t["done"], t["waiting"], t["leased"], t["dead"]) == (100, 60, 35, 3, 2)
    assert t["checkpoints"] == 100 + 61 + 6 + 40
    assert data["dead_letters"] == 2


def test_velocity_and_eta(conn):
    make_workflow(conn)
    data = status_data(conn, WF, velocity_window_s=300)
    s = steps_by_number(data)
    # 50 ok checkpoints at step 1 in the last 4 minutes, measured over the
    # window rounded down to the minute (300-360 s): 8.3-10 per minute.
    assert 50 * 60 / 360 - 0.01 <= s[1]["velocity_per_min"] <= 50 * 60 / 300 + 0.01
    # 20 at step 2
    assert 20 * 60 / 360 - 0.01 <= s[2]["velocity_per_min"] <= 20 * 60 / 300 + 0.01
    assert s[10]["velocity_per_min"] == 0
    # ETA = (waiting + leased) / velocity; unknown with no velocity
    assert s[2]["eta_s"] == pytest.approx(18 * 60 / s[2]["velocity_per_min"], rel=0.02)
    assert s[10]["eta_s"] is None
    assert s[1]["eta_s"] == 0
    # Finishing rate: step-1 SKIPs (none recent: s001-s020 are old) + step 10 (old) = 0,
    # so the workflow ETA falls back to the slowest step, which is unknown.
    assert data["totals"]["completion_per_min"] == 0
    assert data["totals"]["eta_s"] is None


def test_stall_detection(conn):
    make_workflow(conn)
    data = status_data(conn, WF, stall_window_s=600)
    s = steps_by_number(data)
    assert s[10]["stalled"] and s[10]["state"] == "stalled"
    assert not s[2]["stalled"] and s[2]["state"] == "running"
    assert s[1]["state"] == "idle"
    assert data["stalled_steps"] == [10]
    # a longer window: no stall
    assert status_data(conn, WF, stall_window_s=3600)["stalled_steps"] == []
    # the SQL function agrees
    rows = conn.execute("SELECT step FROM interp.stalled_steps('10 minutes') "
                        "WHERE workflow_id = %s", (WF,)).fetchall()
    assert [r["step"] for r in rows] == [10]
    # paused: not stalled, says paused
    conn.execute("UPDATE interp.workflows SET paused = true WHERE workflow_id = %s", (WF,))
    data = status_data(conn, WF)
    assert data["stalled_steps"] == []
    assert steps_by_number(data)[10]["state"] == "paused"


def test_breaker_open_state(conn):
    make_workflow(conn)
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, opened_at, "
                 "last_error) VALUES ('mon_model', 'open', 5, now(), 'CUDA out of memory')")
    data = status_data(conn, WF)
    assert steps_by_number(data)[2]["state"] == "breaker open"
    assert data["open_breakers"] == ["mon_model"]


def test_rollups_match_raw_tables(conn):
    make_workflow(conn)
    # move things around the way the engine does, in multi-row statements
    conn.execute("UPDATE interp.subject_state SET status = 'leased', lease_owner = 'w2', "
                 "lease_expires = now() + interval '1 minute' "
                 "WHERE workflow_id = %s AND step = 10 AND status = 'ready' "
                 "AND subject_id <= 's070'", (WF,))
    conn.execute("UPDATE interp.subject_state SET status = 'done', step = NULL, lease_owner = NULL,"
                 " lease_expires = NULL WHERE workflow_id = %s AND subject_id BETWEEN 's061' "
                 "AND 's065'", (WF,))
    conn.execute("DELETE FROM interp.subject_state WHERE workflow_id = %s AND subject_id = 's100'",
                 (WF,))
    counts = conn.execute("SELECT step, status, sum(n)::int AS n FROM interp.subject_counts "
                          "WHERE workflow_id = %s GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2",
                          (WF,)).fetchall()
    raw = conn.execute("SELECT coalesce(step, 0) AS step, status, count(*)::int AS n "
                       "FROM interp.subject_state WHERE workflow_id = %s GROUP BY 1, 2 "
                       "ORDER BY 1, 2", (WF,)).fetchall()
    assert counts == raw
    done = conn.execute("SELECT step, done FROM interp.step_status(%s)", (WF,)).fetchall()
    raw_done = conn.execute("SELECT step, count(DISTINCT subject_id) AS done "
                            "FROM interp.checkpoints WHERE workflow_id = %s AND ok "
                            "GROUP BY step ORDER BY step", (WF,)).fetchall()
    assert done == raw_done
    # a rebuild gives the same answers
    before = status_data(conn, WF)["steps"]
    conn.execute("SELECT interp.rebuild_ops_rollups()")
    after = status_data(conn, WF)["steps"]
    strip = ("velocity_per_min", "eta_s")
    assert [{k: v for k, v in s.items() if k not in strip} for s in before] == \
        [{k: v for k, v in s.items() if k not in strip} for s in after]


def test_render_right_aligns_step_numbers(conn):
    make_workflow(conn)
    text = render_status(status_data(conn, WF))
    lines = text.splitlines()
    assert any(line.startswith(" Step  1 | Check if Summary Exists") for line in lines), text
    assert any(re.match(r"^ Step  2 \| Extract summary\s+\|\s+60 \|\s+80 \| █+░+", line)
               for line in lines), text
    assert any(line.startswith(" Step 10 | " + SCRIPT_NAME) for line in lines), text
    assert "Total: 100 subjects" in text
    assert "Model lane:" in text


def test_status_cli_json_and_check(cli, conn):
    make_workflow(conn)
    proc = cli("status", "--workflow", str(WF), "--json")
    data = json.loads(proc.stdout)
    assert steps_by_number(data)[2]["done"] == 60
    # stalled and dead letters: exit 3, reasons on stderr
    proc = cli("status", "--workflow", str(WF), "--check", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "stalled" in proc.stderr and "dead letter" in proc.stderr
    assert "Step 10" in proc.stdout


def test_check_passes_when_healthy(cli, conn):
    make_workflow(conn, dead=0, stale_step10=False)
    proc = cli("status", "--workflow", str(WF), "--check", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a stall window shorter than the quiet time flags step 10 (quiet for a minute)
    proc = cli("status", "--workflow", str(WF), "--check", "--stall-window", "30", check=False)
    assert proc.returncode == 3


def test_unknown_workflow_and_subject(cli, conn):
    make_workflow(conn)
    for args in (("status", "--workflow", "424242"),
                 ("trace", "--workflow", "424242", "--subject", "s001"),
                 ("trace", "--workflow", str(WF), "--subject", "nope"),
                 ("prune", "--workflow", "424242", "--older-than", "30d")):
        proc = cli(*args, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.startswith("error: no "), proc.stderr
        assert "Traceback" not in proc.stderr
    with pytest.raises(NotFound):
        status_data(conn, 424242)


def test_trace_order_and_audit(cli, conn):
    make_workflow(conn)
    data = trace_data(conn, WF, "s021")
    got = [(c["step"], c["attempt"], c["outcome"]) for c in data["checkpoints"]]
    assert got == [(1, 1, "RUN"), (2, 1, "ERROR"), (2, 2, "PASS"), (10, 1, "DONE")]
    assert data["checkpoints"][1]["error"] == "timeout"
    assert data["checkpoints"][2]["model"] == "m1"
    assert data["state"]["status"] == "done"
    proc = cli("trace", "--workflow", str(WF), "--subject", "s021", "--json")
    assert [c["outcome"] for c in json.loads(proc.stdout)["checkpoints"]] == \
        ["RUN", "ERROR", "PASS", "DONE"]
    text = cli("trace", "--workflow", str(WF), "--subject", "s021").stdout
    assert "timeout" in text and "m1 seed=7" in text


def _checkpoint_keys(conn):
    return conn.execute("SELECT subject_id, step, checkpoint_id, finished_at "
                        "FROM interp.checkpoints "
                        "WHERE workflow_id = %s ORDER BY 1, 2, 3", (WF,)).fetchall()


def test_prune_keeps_last_checkpoint_per_subject_step(cli, conn):
    make_workflow(conn)
    # more history for ended subjects: two old extra visits at step 1 for s001-s010
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, error, started_at, finished_at)
        SELECT %s, 's' || lpad(i::text, 3, '0'), 1, 0, a, false, 'ERROR', 'old',
               now() - interval '45 days', now() - interval '45 days'
          FROM generate_series(1, 10) i, generate_series(1, 2) a""", (WF,))
    # an active subject with old errors: never pruned
    conn.execute("""
        INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
               outcome, error, started_at, finished_at)
        VALUES (%s, 's090', 1, 0, 1, false, 'ERROR', 'old', now() - interval '45 days',
                now() - interval '45 days')""", (WF,))
    before = _checkpoint_keys(conn)
    status_before = status_data(conn, WF)["steps"]

    proc = cli("prune", "--workflow", str(WF), "--older-than", "30d", "--dry-run", "--json")
    dry = json.loads(proc.stdout)
    # s001-s010: 2 old errors each at step 1 (the ok is newer and stays); s021: the old
    # step-2 ERROR (its PASS is newer); dead s099/s100 have recent errors only.
    assert dry["candidates"] == 20 + 1 and dry["deleted"] == 0
    assert _checkpoint_keys(conn) == before

    proc = cli("prune", "--workflow", str(WF), "--older-than", "30d", "--batch-size", "3",
               "--json")
    result = json.loads(proc.stdout)
    assert result["deleted"] == 21 and result["batches"] > 1
    after = _checkpoint_keys(conn)
    assert len(after) == len(before) - 21
    # every (subject, step) still has its last checkpoint (by finished_at)
    last = {}
    for r in before:
        key = (r["subject_id"], r["step"])
        last[key] = max(last.get(key, (r["finished_at"], 0)),
                        (r["finished_at"], r["checkpoint_id"]))
    kept = {r["checkpoint_id"] for r in after}
    assert {cid for _, cid in last.values()} <= kept
    assert {(r["subject_id"], r["step"]) for r in after} == set(last)
    # the active subject keeps its old error
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = %s "
                        "AND subject_id = 's090' AND error = 'old'", (WF,)).fetchone()["n"] == 1
    # "did s005 pass step 1" still answers; progress is unchanged
    assert conn.execute("SELECT ok FROM interp.checkpoints WHERE workflow_id = %s AND "
                        "subject_id = 's005' AND step = 1", (WF,)).fetchone()["ok"] is True
    strip = ("velocity_per_min", "eta_s")
    assert [{k: v for k, v in s.items() if k not in strip} for s in status_before] == \
        [{k: v for k, v in s.items() if k not in strip}
         for s in status_data(conn, WF)["steps"]]
    # running it again deletes nothing more
    again = json.loads(cli("prune", "--workflow", str(WF), "--older-than", "30d",
                           "--json").stdout)
    assert again["deleted"] == 0


def test_parse_age():
    assert parse_age("30d").total_seconds() == 30 * 86400
    assert parse_age("12h").total_seconds() == 12 * 3600
    with pytest.raises(Exception, match="bad age"):
        parse_age("thirty days")


def test_model_lane(conn):
    make_workflow(conn)
    conn.execute("""
        INSERT INTO interp.runs (run_id, workflow_id, worker_id, host, pid, definition_version,
                                 started_at, status)
        VALUES (501, %s, 'w1', 'h', 1, 1, now() - interval '100 seconds', 'running')""", (WF,))
    conn.execute("""
        INSERT INTO interp.waves (workflow_id, step, run_id, size, model, started_at,
                                  finished_at, busy_ms)
        VALUES (%(wf)s, 2, 501, 10, 'm1', now() - interval '90 s', now() - interval '70 s', 20000),
               (%(wf)s, 2, 501, 10, 'm2', now() - interval '40 s', now() - interval '10 s', 30000),
               (%(wf)s, 1, 501, 10, NULL, now() - interval '40 s', now() - interval '39 s', 900)
        """, {"wf": WF})
    conn.execute("""
        INSERT INTO interp.model_events (run_id, worker_id, event, model, from_model,
                                         duration_ms, at)
        VALUES (501, 'w1', 'load', 'm1', NULL, 1500, now() - interval '95 s'),
               (501, 'w1', 'switch', 'm2', 'm1', 2500, now() - interval '45 s')""")
    lane = status_data(conn, WF)["model_lane"]
    assert lane["loaded_model"] == "m2"
    assert lane["switches"] == 1
    assert lane["duty_cycle"] == pytest.approx(0.5, abs=0.02)
    assert [e["event"] for e in lane["events"]] == ["switch", "load"]
    gaps = conn.execute("SELECT idle_ms FROM interp.model_lane_gaps WHERE run_id = 501 "
                        "AND idle_ms IS NOT NULL").fetchall()
    assert [round(g["idle_ms"]) for g in gaps] == [30000]
    # The duty cycle's wall time runs on with the clock: the text is checked against
    # the figure it was drawn from, not against 50% (a read 1 s later is 49.5%).
    data = status_data(conn, WF)
    duty = data["model_lane"]["duty_cycle"]
    assert duty == pytest.approx(0.5, abs=0.02)
    assert f"Model lane: m2 · duty cycle {percent(duty)}% · 1 switch(es)" in render_status(data)


def test_compaction_folds_exited_backends_only(conn, dsn):
    import psycopg

    make_workflow(conn)  # written by this (live) connection
    with psycopg.connect(dsn, autocommit=True) as other:  # a backend that then exits
        other.execute("""
            INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok,
                   outcome, started_at, finished_at)
            VALUES (%s, 's090', 2, 1, 1, true, 'PASS', now(), now())""", (WF,))
    before = status_data(conn, WF)["steps"]
    mine = conn.execute("SELECT pg_backend_pid() AS p").fetchone()["p"]
    conn.execute("SELECT interp.compact_ops_rollups()")
    shards = {r["shard"] for r in conn.execute(
        "SELECT DISTINCT shard FROM interp.checkpoint_totals WHERE workflow_id = %s", (WF,))}
    assert shards == {0, mine}
    strip = ("velocity_per_min", "eta_s")
    assert [{k: v for k, v in s.items() if k not in strip} for s in before] == \
        [{k: v for k, v in s.items() if k not in strip}
         for s in status_data(conn, WF)["steps"]]
    assert steps_by_number({"steps": before})[2]["done"] == 61
