"""Model steps through the whole engine, with the real SmolLM2 GGUF: audit columns,
the model lane's preference for the loaded model, and switches recorded for ops."""

from __future__ import annotations

import threading

import pytest

from interpreter.engine import Runner, RunOptions
from tests.helpers import add_items, check_invariants, make_workflow, wait_for

pytestmark = pytest.mark.model

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "maxLength": 20}},
          "required": ["label"]}




def model_rows(conn, smollm2, names):
    for i, name in enumerate(names):
        # Different n_ctx makes each a distinct model to load, as two GGUFs would be.
        conn.execute("INSERT INTO interp.models (name, source, n_ctx) VALUES (%s, %s, %s)",
                     (name, str(smollm2), 512 + 64 * i))
        conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                     "(%s, 'model', %s, '{\"max_tokens\": 24, \"reask\": 0}')",
                     (f"actor_{name}", name))
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('label', "
                 "'Give a one-word label for: {{ title }}. Answer in JSON.')")


def test_model_steps_alternating_between_two_models(db, conn, smollm2):
    add_items(conn, 6, title="Senior data engineer {i}")
    model_rows(conn, smollm2, ["m_a", "m_b"])
    steps = [{"number": n, "actor": f"actor_{'m_a' if n % 2 else 'm_b'}", "template": "label",
              "output_schema": SCHEMA} for n in (1, 2, 3, 4)]
    make_workflow(conn, 50, steps=steps,
                  transitions=[(1, "*", 2), (2, "*", 3), (3, "*", 4), (4, "*", None)])
    summary = Runner(db, 50, RunOptions(until_idle=True, poll_s=0.05, model_batch_size=8)).run()
    assert check_invariants(conn, 50) == {}
    rows = conn.execute("SELECT * FROM interp.checkpoints WHERE workflow_id = 50").fetchall()
    assert len(rows) == 24
    for r in rows:
        assert r["model"] in ("m_a", "m_b") and len(r["model_sha256"]) == 64
        assert r["sampling"]["temperature"] == 0 and r["seed"] is not None
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and r["gen_ms"] > 0
    # Naively (one subject through all steps) this is 4 switches per subject: 23.
    # Waves of 6 at each step give at most one switch per step boundary.
    assert summary.model_switches <= 3
    events = conn.execute("SELECT event, count(*) AS n FROM interp.model_events "
                          "GROUP BY 1").fetchall()
    counts = {e["event"]: e["n"] for e in events}
    assert counts.get("load") == 2
    assert counts.get("switch", 0) == summary.model_switches
    sha = conn.execute("SELECT sha256 FROM interp.models WHERE name = 'm_a'").fetchone()
    assert sha["sha256"] == rows[0]["model_sha256"]


def test_model_load_failure_opens_the_breaker_and_other_steps_go_on(db, conn, tmp_path):
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    add_items(conn, 5)
    conn.execute("INSERT INTO interp.models (name, source) VALUES ('broken', %s)", (str(bad),))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('actor_broken', 'model', 'broken', "
                 "'{\"breaker_threshold\": 3, \"breaker_cooldown_s\": 3600}')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t', '{{ title }}')")
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES "
                 "('ok51', 'script', 'tests.actors.faults:ok')")
    make_workflow(conn, 51, steps=[{"number": 1, "actor": "ok51"},
                                   {"number": 2, "actor": "actor_broken", "template": "t",
                                    "max_attempts": 5}],
                  transitions=[(1, "*", 2), (2, "*", None)])
    stop = threading.Event()
    runner = Runner(db, 51, RunOptions(poll_s=0.05), stop=stop)
    t = threading.Thread(target=runner.run)
    t.start()
    try:
        wait_for(lambda: conn.execute(
            "SELECT state FROM interp.actor_health WHERE actor = 'actor_broken'"
        ).fetchone() == {"state": "open"}, what="the breaker to open")
        # The failed subjects' retry backoff has passed and the model lane, with that
        # work ready, is held back by the breaker: they wait instead of failing again.
        wait_for(lambda: runner.model_lane.no_wave_cause == "breaker",
                   what="the model lane to be held back by the breaker")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    ok1 = conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 51 "
                       "AND step = 1 AND ok").fetchone()["n"]
    assert ok1 == 5  # the cheap step was not held up
    errors = conn.execute("SELECT error FROM interp.checkpoints WHERE workflow_id = 51 "
                          "AND step = 2").fetchall()
    assert errors and all(e["error"] for e in errors)
    health = conn.execute("SELECT state FROM interp.actor_health WHERE actor = 'actor_broken'"
                          ).fetchone()
    assert health["state"] == "open"
    dead = conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 51 "
                        "AND status = 'dead'").fetchone()["n"]
    assert dead == 0  # waiting behind the breaker, not failed
