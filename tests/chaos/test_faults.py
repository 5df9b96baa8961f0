"""Fault injection inside one workflow that also has healthy steps.

A gate sends each subject down one lane: an actor that raises, hangs, returns
10 MB, returns something that is not JSON, asks for impossible memory, really
exhausts memory (under RLIMIT_AS), a model whose GGUF file is random bytes, or
a healthy actor. Every lane ends in the same SQL effect counter. The worker
(a real `interp run` process) must not crash, the healthy lane must finish,
and each fault must be recorded, retried and dead-lettered (or trip the
breaker) as designed.

Reproduce: INTERP_TEST_DSN=... .venv/bin/pytest -q tests/chaos/test_faults.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from tests.chaos.common import all_invariants, record_figure
from tests.helpers import COUNT_EFFECT_SQL, REPO_ROOT, add_items, make_workflow

pytestmark = [pytest.mark.slow]

WF = 710
N = 70
LANES = {  # outcome of the gate -> (step, actor target, params, expected error)
    "RAISE": (2, "tests.actors.faults:raise_always", {}, "always raises"),
    "HANG": (3, "tests.actors.faults:hang", {"seconds": 8}, "timed out"),
    "HUGE": (4, "tests.actors.faults:huge_output", {"bytes": 10 * 1024 * 1024}, "output too large"),
    "NOTJSON": (5, "tests.actors.faults:not_json", {}, "not JSON"),
    "OOM": (6, "tests.actors.faults:out_of_memory", {}, "MemoryError"),
    "EXHAUST": (7, "tests.actors.chaos:exhaust_memory", {"max_gb": 64}, "MemoryError"),
    "MODEL": (8, None, {}, "model"),
    "GOOD": (9, "tests.actors.faults:ok", {}, None),
}
EFFECT_STEP = 10


def build(conn, model_path) -> None:
    add_items(conn, N)
    names = list(LANES)
    gate = ("SELECT id::text AS subject_id, (%(lanes)s::text[])[1 + id %% "
            f"{len(names)}] AS outcome FROM public.items WHERE id = ANY(%(ids)s::bigint[])")
    gate = gate.replace("%(lanes)s", "ARRAY[" + ", ".join(f"'{n}'" for n in names) + "]")
    conn.execute("INSERT INTO interp.models (name, source, n_ctx) VALUES ('corrupt', %s, 512)",
                 (str(model_path),))
    conn.execute("INSERT INTO interp.prompt_templates (name, version, body) VALUES "
                 "('fault_prompt', 1, 'Say hi to {{ title }}')")
    actors = [{"name": "fault_effect", "kind": "sql", "target": COUNT_EFFECT_SQL},
              {"name": "fault_model", "kind": "model", "target": "corrupt",
               "params": {"breaker_threshold": 2, "breaker_cooldown_s": 0.5}}]
    steps = [{"number": 1, "name": "Route", "kind": "gate", "gate_sql": gate},
             {"number": EFFECT_STEP, "name": "Effect", "actor": "fault_effect"}]
    transitions = [(1, "RUN", 9), (1, "SKIP", None), (EFFECT_STEP, "DONE", None)]
    for lane, (number, target, params, _) in LANES.items():
        if target is None:
            steps.append({"number": number, "name": lane, "actor": "fault_model",
                          "template": "fault_prompt", "params": {"max_tokens": 8,
                                                                 "retry_base_s": 0.05},
                          "max_attempts": 3})
        else:
            actors.append({"name": f"fault_{lane.lower()}", "kind": "script", "target": target,
                           "params": {**params, "breaker_threshold": 1000}})
            steps.append({"number": number, "name": lane, "actor": f"fault_{lane.lower()}",
                          "max_attempts": 2, "timeout_s": 1.5,
                          "params": {"retry_base_s": 0.05}})
        transitions += [(1, lane, number), (number, "*", EFFECT_STEP)]
    make_workflow(conn, WF, steps=steps, transitions=transitions, actors=actors)


def limit_memory() -> None:
    # 4 GiB of address space: room for Python, psycopg and llama.cpp, not for 64 GB.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_faulty_actors_never_crash_the_worker_and_others_go_on(dsn, conn, tmp_path):
    model_path = tmp_path / "corrupt.gguf"
    model_path.write_bytes(os.urandom(1 << 20))
    build(conn, model_path)
    env = {**os.environ, "INTERP_DSN": dsn, "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "interpreter", "run", "--workflow", str(WF),
                           "--until-idle", "--batch-size", "10", "--poll", "0.05", "--json"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          preexec_fn=limit_memory)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    states = {r["subject_id"]: r for r in conn.execute(
        "SELECT subject_id, status, step, last_error FROM interp.subject_state "
        "WHERE workflow_id = %s", (WF,))}
    names = list(LANES)
    lane_of = {str(i): names[i % len(names)] for i in range(1, N + 1)}
    for sid, lane in lane_of.items():
        number, _, _, error = LANES[lane]
        s = states[sid]
        if error is None:
            assert s["status"] == "done", s
        else:
            assert s["status"] == "dead" and s["step"] == number, (lane, s)
            assert error in s["last_error"], (lane, s)
    # each fault was recorded once per attempt, with its error
    for lane, (number, target, _, error) in LANES.items():
        if error is None:
            continue
        rows = conn.execute("SELECT attempt, ok, error FROM interp.checkpoints WHERE "
                            "workflow_id = %s AND step = %s", (WF, number)).fetchall()
        assert rows and not any(r["ok"] for r in rows), lane
        assert max(r["attempt"] for r in rows) == (3 if target is None else 2), lane
    # the corrupt model opened its actor's breaker
    health = conn.execute("SELECT * FROM interp.actor_health WHERE actor = 'fault_model'"
                          ).fetchone()
    assert health is not None and health["opened_at"] is not None, health
    assert health["consecutive_failures"] >= 2 and "corrupt.gguf" in (health["last_error"] or "")
    # the hung actor did not hold the run hostage (8 s sleeps, 1.5 s timeout)
    assert took < 60, took
    violations = all_invariants(conn, WF, effect_step=EFFECT_STEP)
    assert violations == {}, violations
    good = sum(1 for lane in lane_of.values() if lane == "GOOD")
    effects = conn.execute("SELECT count(*) AS n FROM public.effects").fetchone()["n"]
    assert effects == good
    record_figure("faults", lanes=len(LANES) - 1, subjects=N, seconds=round(took, 1),
                  violations=0)


def test_hung_actor_does_not_keep_the_process_alive_after_the_run(dsn, conn, tmp_path):
    """A script actor that hangs past its step's timeout is abandoned, and the run
    ends; the process must then exit too, not wait for the abandoned thread."""
    from tests.helpers import standard_pipeline

    standard_pipeline(conn, wf=711, n=2, script_target="tests.actors.faults:hang",
                      script_params={"seconds": 60}, script_max_attempts=1)
    conn.execute("UPDATE interp.steps SET timeout_s = 1 WHERE workflow_id = 711 AND "
                 "execution_order = 2")
    env = {**os.environ, "INTERP_DSN": dsn, "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "interpreter", "run", "--workflow", "711",
                             "--until-idle", "--poll", "0.05"], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 25
        finished = None
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute("SELECT status FROM interp.runs WHERE workflow_id = 711"
                               ).fetchone()
            if finished is None and row and row["status"] != "running":
                finished = time.monotonic() - t0
            time.sleep(0.1)
        exited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if finished is None:
        # The process may exit before a poll sees the run row change: then the run
        # ended no later than the process did.
        row = conn.execute("SELECT status FROM interp.runs WHERE workflow_id = 711").fetchone()
        if row and row["status"] != "running":
            finished = exited
    assert finished is not None and finished < 20, "the run itself should end quickly"
    assert exited < finished + 5, (
        f"the run ended after {finished:.1f}s but the process exited only after {exited:.1f}s: "
        "the abandoned script-actor thread is joined at interpreter exit")
