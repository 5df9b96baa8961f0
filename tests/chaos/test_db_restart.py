"""Chaos: restart PostgreSQL under running workers; and a database that stays away.

The test starts its own server (initdb + pg_ctl in a temporary folder, on a
free port) so that it can stop and start it; the shared test server is not
touched.

Reproduce: INTERP_TEST_DSN=... .venv/bin/pytest -q tests/chaos/test_db_restart.py
"""

from __future__ import annotations

import random
import time

import psycopg
import pytest

from interpreter.migrations import migrate
from tests.chaos.common import (
    PgServer,
    all_invariants,
    chaos_pipeline,
    cpu_seconds,
    popen_interp,
    record_figure,
    stop_all,
    wait_rusage,
)

pytestmark = [pytest.mark.slow]

WF = 702
RESTARTS = 3


@pytest.fixture
def server():
    s = PgServer()
    s.start()
    migrate(s.dsn)
    yield s
    s.close()


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row)


def test_workers_survive_postgres_restarts(server, tmp_path):
    with connect(server.dsn) as c:
        chaos_pipeline(c, WF, 1500, script_seconds=0.02)
    rng = random.Random(7002)
    args = ("run", "--workflow", str(WF), "--until-idle", "--batch-size", "25", "--lease", "5",
            "--poll", "0.1", "--db-timeout", "60")
    workers = [popen_interp(server.dsn, *args, log=tmp_path / f"w{i}.log") for i in range(2)]
    restarts = 0
    try:
        for n in range(RESTARTS):
            time.sleep(rng.uniform(1.5, 3.0))
            assert any(p.poll() is None for p in workers), "the run ended before the restarts"
            # fast = clean shutdown; immediate = a crash with WAL recovery on start.
            server.stop("immediate" if n % 2 else "fast")
            time.sleep(rng.uniform(0.5, 2.0))  # the outage
            server.start()
            restarts += 1
        for i, p in enumerate(workers):
            rc = p.wait(180)
            assert rc == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]
    finally:
        stop_all(workers)
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    # The workers saw the outages: a failed statement backed off ("retrying in"), or
    # the pool replaced dead connections, retrying in the background.
    assert "retrying in" in logs or "error connecting" in logs, logs[-2000:]
    with connect(server.dsn) as c:
        violations = all_invariants(c, WF, effect_step=3)
        assert violations == {}, violations
        done = c.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
                         "AND status = 'done'", (WF,)).fetchone()["n"]
    assert done == 1500
    assert server.starts == RESTARTS + 1
    record_figure("db_restart", restarts=restarts, subjects=1500, workers=2, violations=0)


def test_unreachable_database_exits_2_with_one_line_and_does_not_spin(server, tmp_path):
    with connect(server.dsn) as c:
        chaos_pipeline(c, 703, 5)
    log = tmp_path / "w.log"
    # No --until-idle: an idle worker keeps polling, so it notices the outage.
    p = popen_interp(server.dsn, "run", "--workflow", "703", "--poll", "0.2",
                     "--db-timeout", "4", log=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with connect(server.dsn) as c:
                left = c.execute("SELECT count(*) AS n FROM interp.subject_state WHERE "
                                 "workflow_id = 703 AND status = 'done'").fetchone()["n"]
            if left == 5:
                break
            time.sleep(0.2)
        assert p.poll() is None, log.read_text()
        server.stop("immediate")
        t0 = time.monotonic()
        cpu0 = cpu_seconds(p.pid)
        rc, cpu_total = wait_rusage(p, 60)
        outage_s = time.monotonic() - t0
    finally:
        stop_all([p])
    out = log.read_text()
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert rc == 2, out
    assert len(errors) == 1 and "PostgreSQL" in errors[0] and "4s" in errors[0], out
    assert "Traceback" not in out
    # The worker's clock starts when its first query fails, which can be a little
    # before this test's t0 (taken after pg_ctl returns): allow half a second.
    assert 3.5 <= outage_s < 20, outage_s
    spent = cpu_total - cpu0
    # Backoff, not a busy loop: well under a tenth of a core during the outage.
    assert spent < 0.1 * outage_s + 0.3, f"{spent:.2f}s CPU in {outage_s:.1f}s of outage"
    record_figure("db_outage", exit_code=rc, outage_s=round(outage_s, 1),
                  cpu_s=round(spent, 2), message=errors[0])


def test_unreachable_database_gives_up_after_db_timeout_not_twice_that(server, tmp_path):
    """--db-timeout is the limit a user sets; the worker should be gone soon after it,
    not after a second full timeout spent trying to record the end of the run."""
    with connect(server.dsn) as c:
        chaos_pipeline(c, 704, 1)
    log = tmp_path / "w.log"
    p = popen_interp(server.dsn, "run", "--workflow", "704", "--poll", "0.2",
                     "--db-timeout", "6", log=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with connect(server.dsn) as c:
                if c.execute("SELECT count(*) AS n FROM interp.subject_state WHERE "
                             "workflow_id = 704 AND status = 'done'").fetchone()["n"] == 1:
                    break
            time.sleep(0.2)
        server.stop("immediate")
        t0 = time.monotonic()
        rc, _ = wait_rusage(p, 60)
        outage_s = time.monotonic() - t0
    finally:
        stop_all([p])
    assert rc == 2, log.read_text()
    assert outage_s < 6 + 3, f"exited {outage_s:.1f}s into the outage with --db-timeout 6"
