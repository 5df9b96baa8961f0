"""Chaos: three `interp run` workers over 2,000 subjects; SIGKILL a random one at
random moments (at least 20 times), restart it each time, let the run finish,
then check the invariants in SQL.

Reproduce: INTERP_TEST_DSN=... .venv/bin/pytest -q tests/chaos/test_worker_kill.py
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.chaos.common import all_invariants, chaos_pipeline, popen_interp, record_figure, stop_all

pytestmark = [pytest.mark.slow]

WF = 701
SUBJECTS = 2000
KILLS = int(os.environ.get("INTERP_CHAOS_KILLS", "20"))


def test_sigkill_random_workers_at_random_moments(dsn, conn, smollm2, tmp_path):
    chaos_pipeline(conn, WF, SUBJECTS, model_every=200, script_seconds=0.02)
    rng = random.Random(int(os.environ.get("INTERP_CHAOS_SEED", "7001")))
    args = ("run", "--workflow", str(WF), "--until-idle", "--batch-size", "40",
            "--lease", "3", "--poll", "0.1", "--db-timeout", "30")

    def start(i: int):
        return popen_interp(dsn, *args, "--worker-id", f"chaos-{i}-{time.monotonic_ns()}",
                            log=tmp_path / f"worker{i}.log")

    workers = [start(i) for i in range(3)]
    kills, started = 0, time.monotonic()
    try:
        while kills < KILLS and time.monotonic() - started < 240:
            time.sleep(rng.uniform(0.3, 1.5))
            i = rng.randrange(3)
            if workers[i].poll() is None:
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait(10)
                kills += 1
            elif workers[i].returncode != 0:
                raise AssertionError(f"worker {i} exited {workers[i].returncode}: "
                                     + (tmp_path / f"worker{i}.log").read_text()[-3000:])
            else:
                left = conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE "
                                    "workflow_id = %s AND status NOT IN ('done', 'dead')",
                                    (WF,)).fetchone()["n"]
                if left == 0:
                    break  # the run finished before the kills did
            workers[i] = start(i)
        for i, p in enumerate(workers):
            rc = p.wait(180)
            assert rc == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]
    finally:
        stop_all(workers)

    assert kills >= KILLS, f"only {kills} kills before the run finished; slow the actors down"
    violations = all_invariants(conn, WF, effect_step=3)
    assert violations == {}, violations
    done = conn.execute("SELECT count(*) FILTER (WHERE status = 'done') AS done, count(*) AS n "
                        "FROM interp.subject_state WHERE workflow_id = %s", (WF,)).fetchone()
    assert done["n"] == SUBJECTS and done["done"] == SUBJECTS
    model = conn.execute("SELECT count(*) AS n, count(*) FILTER (WHERE model_sha256 IS NOT NULL)"
                         " AS audited FROM interp.checkpoints WHERE workflow_id = %s AND step = 5"
                         " AND ok", (WF,)).fetchone()
    assert model["n"] == SUBJECTS // 200 and model["audited"] == model["n"]
    runs = conn.execute("SELECT count(*) AS n FROM interp.runs WHERE workflow_id = %s",
                        (WF,)).fetchone()["n"]
    record_figure("worker_kill", kills=kills, subjects=SUBJECTS, runs=runs,
                  model_subjects=model["n"], seconds=round(time.monotonic() - started, 1),
                  violations=0)
