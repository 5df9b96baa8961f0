"""Prometheus metrics: the exposition parses, and every figure equals the database.

The figures are read from the raw tables here (checkpoints, subject_state,
waves), not from the rollups the collector reads, so a rollup that drifted
would show.
"""

from __future__ import annotations

import math
import re
import select
import signal
import subprocess
import time
import urllib.request
from collections import defaultdict

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from interpreter.engine import Runner, RunOptions
from interpreter.ops.dashboard import serve_in_thread
from interpreter.ops.metrics import BREAKER_STATES, PARTS, WAVE_BUCKETS, metrics_registry
from tests.helpers import add_items, make_workflow

WF = 1001


def load_worked_example(cli, conn, postings: int = 24) -> None:
    """Workflow 1001 over `postings` enabled postings (every third long) and one disabled.

    Its SHORT transition is removed, so short postings are dead-lettered at step 2
    (no transition for an outcome) and the dead-letter figures are not all zero.
    """
    cli("seed", "load", "seeds/0010_domain.sql", "seeds/1001_example_word_count.sql")
    conn.execute("INSERT INTO public.postings (posting_id, title, description, enabled) "
                 "SELECT g, 'p' || g, CASE WHEN g %% 3 = 0 THEN repeat('w ', 150) ELSE 'short' END,"
                 " true FROM generate_series(1, %s) g", (postings,))
    conn.execute("INSERT INTO public.postings (posting_id, title, description, enabled) "
                 "VALUES (%s, 'off', 'off', false)", (postings + 1,))
    conn.execute("DELETE FROM interp.step_transitions WHERE workflow_id = %s AND from_step = 2 "
                 "AND outcome = 'SHORT'", (WF,))


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], resp.read().decode()


def families(text: str) -> dict[str, dict[tuple, float]]:
    """Samples by sample name, each keyed by its sorted label pairs."""
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def key(**labels: object) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def expected_transitions(conn) -> dict[tuple, float]:
    rows = conn.execute("SELECT workflow_id, step, outcome, ok, count(*) AS n "
                        "FROM interp.checkpoints GROUP BY 1, 2, 3, 4").fetchall()
    return {key(workflow=r["workflow_id"], step=r["step"], outcome=r["outcome"],
                ok="true" if r["ok"] else "false"): r["n"] for r in rows}


def expected_by_step(conn, status: str) -> dict[tuple, float]:
    steps = conn.execute("SELECT workflow_id, execution_order AS step FROM interp.steps").fetchall()
    found = {key(workflow=r["workflow_id"], step=r["step"]): 0 for r in steps}
    for r in conn.execute("SELECT workflow_id, step, count(*) AS n FROM interp.subject_state "
                          "WHERE status = %s GROUP BY 1, 2", (status,)):
        found[key(workflow=r["workflow_id"], step=r["step"])] = r["n"]
    return found


def expected_waves(conn) -> dict[str, dict[tuple, float]]:
    """The wave histogram's samples, counted in Python from the waves' durations."""
    rows = conn.execute(
        "SELECT workflow_id, CASE WHEN model IS NULL THEN 'cheap' ELSE 'model' END AS lane, "
        "extract(epoch FROM finished_at - coalesce(started_at, claimed_at))::float8 AS d "
        "FROM interp.waves WHERE finished_at IS NOT NULL").fetchall()
    durations: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        durations[(r["workflow_id"], r["lane"])].append(r["d"])
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for (wf, lane), ds in durations.items():
        for le in (*WAVE_BUCKETS, math.inf):
            label = "+Inf" if le == math.inf else repr(float(le))
            out["interp_wave_duration_seconds_bucket"][key(workflow=wf, lane=lane, le=label)] = \
                sum(d <= le for d in ds)
        out["interp_wave_duration_seconds_count"][key(workflow=wf, lane=lane)] = len(ds)
        out["interp_wave_duration_seconds_sum"][key(workflow=wf, lane=lane)] = sum(ds)
    return out


def assert_matches_the_database(conn, got: dict[str, dict[tuple, float]]) -> None:
    assert got["interp_transitions_total"] == expected_transitions(conn)
    assert got["interp_queue_depth"] == expected_by_step(conn, "ready")
    assert got["interp_leased_subjects"] == expected_by_step(conn, "leased")
    assert got["interp_dead_letters"] == expected_by_step(conn, "dead")
    dead_view = conn.execute("SELECT workflow_id, step, count(*) AS n FROM interp.dead_letters "
                             "GROUP BY 1, 2").fetchall()
    assert {key(workflow=r["workflow_id"], step=r["step"]): r["n"] for r in dead_view} == \
        {k: v for k, v in got["interp_dead_letters"].items() if v}
    done = conn.execute("SELECT w.workflow_id, count(s.subject_id) FILTER "
                        "(WHERE s.status = 'done') AS n FROM interp.workflows w "
                        "LEFT JOIN interp.subject_state s USING (workflow_id) "
                        "GROUP BY 1").fetchall()
    assert got["interp_subjects_done"] == {key(workflow=r["workflow_id"]): r["n"] for r in done}

    waves = expected_waves(conn)
    for name in ("interp_wave_duration_seconds_bucket", "interp_wave_duration_seconds_count"):
        assert got[name] == waves[name], name
    for k, total in waves["interp_wave_duration_seconds_sum"].items():
        assert math.isclose(got["interp_wave_duration_seconds_sum"][k], total, rel_tol=1e-9,
                            abs_tol=1e-9)

    breakers = conn.execute(
        "SELECT coalesce(h.actor, a.name) AS actor, coalesce(h.state, 'closed') AS state "
        "FROM interp.actors a FULL JOIN interp.actor_health h ON h.actor = a.name").fetchall()
    assert got["interp_breaker_state"] == {
        key(actor=r["actor"], state=s): float(s == r["state"])
        for r in breakers for s in BREAKER_STATES}
    assert got["interp_scrape_error"] == {key(part=p): 0 for p in PARTS}


def assert_lane_time_matches(conn, got: dict[str, dict[tuple, float]]) -> None:
    """Lane time by cause, when the lane intervals table exists in this schema."""
    present = conn.execute("SELECT to_regclass('interp.lane_intervals') IS NOT NULL AS p"
                           ).fetchone()["p"]
    if not present:
        assert "interp_lane_seconds_total" not in got
        return
    rows = conn.execute(
        "SELECT coalesce(r.workflow_id::text, '') AS wf, li.lane, li.cause, "
        "sum(extract(epoch FROM coalesce(li.ended_at, now()) - li.started_at))::float8 AS s, "
        "bool_or(li.ended_at IS NULL) AS open "
        "FROM interp.lane_intervals li LEFT JOIN interp.runs r USING (run_id) "
        "GROUP BY 1, 2, 3").fetchall()
    lane = got["interp_lane_seconds_total"]
    assert set(lane) == {key(workflow=r["wf"], lane=r["lane"], cause=r["cause"]) for r in rows}
    for r in rows:
        # An interval still open counts up to the statement's now(): allow the scrape's age.
        slack = 5.0 if r["open"] else 1e-6
        assert abs(lane[key(workflow=r["wf"], lane=r["lane"], cause=r["cause"])] - r["s"]) <= slack


def test_dashboard_metrics_match_the_database_after_running_the_worked_example(cli, conn, db):
    load_worked_example(cli, conn)
    cli("run", "--workflow", str(WF), "--until-idle", "--batch-size", "5")
    # One breaker in another state than closed, as a worker would leave it.
    conn.execute("INSERT INTO interp.actor_health (actor, state, consecutive_failures, opened_at) "
                 "VALUES ('count_words', 'open', 5, now()) ON CONFLICT (actor) DO UPDATE "
                 "SET state = 'open', consecutive_failures = 5, opened_at = now()")

    server, _ = serve_in_thread(db, port=0)
    try:
        ctype, text = scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert ctype.startswith("text/plain")
    got = families(text)

    # The run did what the figures will be compared with: every subject ended.
    assert sum(got["interp_subjects_done"].values()) == 8  # the 8 long postings of 24
    assert got["interp_dead_letters"][key(workflow=WF, step=2)] == 16
    assert got["interp_breaker_state"][key(actor="count_words", state="open")] == 1
    assert got["interp_breaker_failures"][key(actor="count_words")] == 5
    assert got["interp_wave_duration_seconds_count"][key(workflow=WF, lane="cheap")] > 0
    assert_matches_the_database(conn, got)
    assert_lane_time_matches(conn, got)
    # No model step in 1001: no token figures, and none invented.
    assert "interp_model_generated_tokens" not in got
    info = got["interp_step_info"]
    assert info[key(workflow=WF, step=2, name="Count words", actor="count_words")] == 1


def add_model_step_checkpoints(conn) -> None:
    """A model step's checkpoints: two inside the token window, one an hour old."""
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (77, 'tokens', 'public.postings', 'posting_id')")
    conn.execute("INSERT INTO interp.actors (name, kind, target) "
                 "VALUES ('summarise', 'model', 'tiny')")
    conn.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor) "
                 "VALUES (77, 1, 'Summarise', 'actor', 'summarise')")
    conn.execute(
        "INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok, "
        "outcome, started_at, finished_at, model, prompt_tokens, completion_tokens, "
        "prompt_tokens_reused, forced_tokens) VALUES "
        "(77, 'a', 1, 1, 1, true, 'DONE', now() - interval '12 s', now() - interval '10 s', "
        " 'tiny', 100, 40, 70, 12),"
        "(77, 'b', 1, 1, 1, true, 'DONE', now() - interval '6 s', now() - interval '5 s', "
        " 'tiny', 80, 20, NULL, NULL),"
        "(77, 'c', 1, 1, 1, true, 'DONE', now() - interval '61 min', now() - interval '1 hour', "
        " 'tiny', 999, 999, 999, 999)")


def test_model_tokens_are_counted_over_the_window(db, conn):
    add_model_step_checkpoints(conn)
    text = _exposition(metrics_registry(db, window_s=60))
    got = families(text)
    k = key(workflow=77, step=1, model="tiny")
    assert got["interp_model_generated_tokens"] == {k: 60}
    assert got["interp_model_prompt_tokens"] == {k: 180}
    assert got["interp_model_prompt_tokens_reused"] == {k: 70}   # NULL: not known, not counted
    assert got["interp_model_forced_tokens"] == {k: 12}
    assert got["interp_model_tokens_per_second"] == {k: 1.0}
    assert "in the last 60 s" in text
    transitions = got["interp_transitions_total"]
    assert transitions[key(workflow=77, step=1, outcome="DONE", ok="true")] == 3


def _exposition(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_a_part_that_times_out_is_reported_and_the_rest_still_served(db, conn, dsn):
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (5, 'five', 'public.postings', 'posting_id')")
    # Another session holds the waves table: the scrape's wave query waits past its timeout.
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE interp.waves IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        got = families(_exposition(metrics_registry(db, timeout_s=0.3)))
        elapsed = time.monotonic() - started
        locker.rollback()
    assert got["interp_scrape_error"][key(part="waves")] == 1
    assert all(v == 0 for k, v in got["interp_scrape_error"].items() if k != key(part="waves"))
    assert "interp_wave_duration_seconds_count" not in got
    assert got["interp_subjects_done"] == {key(workflow=5): 0}
    assert elapsed < 5
    # The next scrape, without the lock, reads every part.
    again = families(_exposition(metrics_registry(db, timeout_s=0.3)))
    assert set(again["interp_scrape_error"].values()) == {0}, again["interp_scrape_error"]


def test_a_lost_database_gives_scrape_errors_not_an_http_error(db, conn, dsn):
    server, _ = serve_in_thread(db, port=0)
    try:
        db.close()  # the pool is gone: nothing can be read
        _, text = scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    got = families(text)
    assert got["interp_scrape_error"] == {key(part=p): 1 for p in PARTS}
    assert "interp_transitions_total" not in got


def read_announced_url(proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1)
        if ready:
            line = proc.stderr.readline()
            seen.append(line)
            m = re.search(r"metrics on (http://\S+)", line)
            if m:
                return m.group(1)
        if proc.poll() is not None:
            break
    raise AssertionError(f"no metrics URL announced: {seen}")


def test_interp_run_serves_metrics_while_it_runs(cli, conn):
    load_worked_example(cli, conn, postings=12)
    proc = cli.popen("run", "--workflow", str(WF), "--metrics-port", "0", "--poll", "0.2",
                     stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        url = read_announced_url(proc)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        deadline = time.monotonic() + 120
        while True:
            got = families(scrape(url)[1])
            if got["interp_subjects_done"].get(key(workflow=WF)) == 4 and \
                    sum(got["interp_dead_letters"].values()) == 8:
                break
            assert time.monotonic() < deadline, got["interp_subjects_done"]
            time.sleep(0.5)
        assert_matches_the_database(conn, got)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


@pytest.mark.model
def test_model_lane_figures_match_a_real_model_run(db, conn, smollm2):
    add_items(conn, 4, title="Senior data engineer {i}")
    conn.execute("INSERT INTO interp.models (name, source, n_ctx) VALUES ('smol', %s, 512)",
                 (str(smollm2),))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('label_smol', 'model', 'smol', '{\"max_tokens\": 24, \"reask\": 0}')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('label', "
                 "'Give a one-word label for: {{ title }}. Answer in JSON.')")
    make_workflow(conn, 60, steps=[{"number": 1, "actor": "label_smol", "template": "label"}],
                  transitions=[(1, "*", None)])
    Runner(db, 60, RunOptions(until_idle=True, poll_s=0.05, model_batch_size=4)).run()

    got = families(_exposition(metrics_registry(db)))
    tokens = conn.execute("SELECT model, sum(completion_tokens) AS c, sum(prompt_tokens) AS p, "
                          "sum(prompt_tokens_reused) AS r, sum(forced_tokens) AS f "
                          "FROM interp.checkpoints WHERE workflow_id = 60 GROUP BY 1").fetchall()
    assert len(tokens) == 1 and tokens[0]["c"] > 0
    k = key(workflow=60, step=1, model=tokens[0]["model"])
    assert got["interp_model_generated_tokens"] == {k: tokens[0]["c"]}
    assert got["interp_model_prompt_tokens"] == {k: tokens[0]["p"]}
    assert got["interp_model_prompt_tokens_reused"] == {k: tokens[0]["r"]}
    assert got["interp_model_forced_tokens"] == {k: tokens[0]["f"]}
    assert got["interp_model_tokens_per_second"][k] == pytest.approx(tokens[0]["c"] / 300)
    assert got["interp_wave_duration_seconds_count"][key(workflow=60, lane="model")] > 0
    assert_matches_the_database(conn, got)
    assert_lane_time_matches(conn, got)
