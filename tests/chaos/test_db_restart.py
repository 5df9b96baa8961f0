"""Chaos: restart PostgreSQL under running workers; crash it for 5, 20 and 40 s
under an idle worker; crash it and kill every backend under 3 busy workers; and
a database that stays away.

The test starts its own server (initdb + pg_ctl in a temporary folder, on a
free port) so that it can stop and start it; the shared test server is not
touched.

"Back" is measured on the database's clock: the first wave a worker commits
after the server answers again (interp.waves.finished_at: its commit
transaction's start) minus the moment pg_ctl said the server was up (or the
moment every backend was terminated). The promise (docs/running.md): within
about 2 s of the database answering, plus the wave that was running.

Reproduce: INTERP_TEST_DSN=... .venv/bin/pytest -q tests/chaos/test_db_restart.py
"""

from __future__ import annotations

import random
import signal
import time

import psycopg
import pytest

from interpreter.migrations import migrate
from tests.chaos.common import (
    PgServer,
    add_items,
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
# Crash outages under an idle worker with the default --db-timeout (60 s).
OUTAGES_S = (5, 20, 40)
# A worker commits again within this long of the server answering: its probe
# backs off to 1 s at most, plus the wave (and the poll) it was in.
BACK_WITHIN_S = 2.0


@pytest.fixture
def server():
    s = PgServer()
    s.start()
    migrate(s.dsn)
    yield s
    s.close()


@pytest.fixture
def durable_server():
    """A server that keeps what it acknowledged through a crash (synchronous_commit
    on), so that a worker's view of its own commits stays true across one."""
    s = PgServer(synchronous_commit=True)
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
    # The workers saw the outages: a failed statement backed off ("retrying in"), the
    # pool replaced dead connections, or the admission thread, whose turn comes every
    # --poll whatever the lanes do, skipped a turn ("admission skipped: lost PostgreSQL").
    assert ("retrying in" in logs or "error connecting" in logs
            or "admission skipped: lost PostgreSQL" in logs), logs[-2000:]
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
    # A bound on wall time, as the promise is one: 6.8-6.9 s here, quiet or beside
    # two CPU hogs. It was 8.8-9.0 s while the timeline's last write still waited
    # 2 s for a pooled connection after the database was given up on (it failed
    # this bound once so); a second timeout would take 12 s.
    assert outage_s < 6 + 3, f"exited {outage_s:.1f}s into the outage with --db-timeout 6"


def first_commit_after(dsn: str, wf: int, since: float, worker: str | None = None,
                       timeout: float = 30.0) -> float | None:
    """The first wave (of this worker) committed with at least one checkpoint after
    `since` (epoch seconds), on the database's clock; None if none came in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with connect(dsn) as c:
                row = c.execute(
                    "SELECT extract(epoch FROM min(w.finished_at))::float8 AS at "
                    "  FROM interp.waves w JOIN interp.runs r USING (run_id) "
                    " WHERE w.workflow_id = %s AND w.committed > 0 "
                    "   AND w.finished_at > to_timestamp(%s) "
                    "   AND (%s::text IS NULL OR r.worker_id = %s)",
                    (wf, since, worker, worker)).fetchone()
            if row["at"] is not None:
                return float(row["at"])
        except psycopg.OperationalError:
            pass
        time.sleep(0.05)
    return None


def wait_done(dsn: str, wf: int, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect(dsn) as c:
            if c.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
                         "AND status = 'done'", (wf,)).fetchone()["n"] >= n:
                return
        time.sleep(0.1)
    raise AssertionError(f"{n} subjects of workflow {wf} not done in {timeout}s")


def db_now(dsn: str) -> float:
    with connect(dsn) as c:
        return float(c.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS t"
                               ).fetchone()["t"])


WAVE_RECORDS_SQL = """
SELECT w.wave_id, w.committed,
       (SELECT count(*) FROM interp.checkpoints c WHERE c.wave_id = w.wave_id
           AND c.error IS DISTINCT FROM %(reaped)s) AS written
  FROM interp.waves w
 WHERE w.workflow_id = %(wf)s AND coalesce(w.committed, 0) <> (
       SELECT count(*) FROM interp.checkpoints c WHERE c.wave_id = w.wave_id
          AND c.error IS DISTINCT FROM %(reaped)s)
"""


def wave_records_wrong(dsn: str, wf: int) -> list[dict]:
    """Waves whose row's `committed` differs from the checkpoints of the wave (a
    lease reaped after its worker's death is charged on the wave's id by the
    reaper, not by the wave's commit: not counted)."""
    from interpreter.wave_store import REAPS_PER_ATTEMPT

    reaped = (f"its lease expired {REAPS_PER_ATTEMPT} times at this step: the worker running "
              "it died or hung (does this subject kill its worker?)")
    with connect(dsn) as c:
        return c.execute(WAVE_RECORDS_SQL, {"wf": wf, "reaped": reaped}).fetchall()


def test_an_idle_worker_is_back_within_seconds_of_a_crashed_database(durable_server, tmp_path):
    """Crashes of 5, 20 and 40 s under the default --db-timeout (60 s): the worker
    commits again within BACK_WITHIN_S of the server answering and never exits.
    Before the fix it came back 10-25 s late, and exited 2 after a 42 s outage,
    18 s after the database was back (issue 22)."""
    server, wf = durable_server, 705
    with connect(server.dsn) as c:
        chaos_pipeline(c, wf, 5)
    log = tmp_path / "w.log"
    # No --until-idle: it polls, and admits the rows added after each restart.
    p = popen_interp(server.dsn, "run", "--workflow", str(wf), "--poll", "0.2",
                     "--worker-id", "idle", log=log)
    lags: dict[int, float] = {}
    try:
        wait_done(server.dsn, wf, 5)
        n = 5
        for outage in OUTAGES_S:
            server.stop("immediate")
            time.sleep(outage)
            assert p.poll() is None, log.read_text()[-3000:]
            server.start()
            back = db_now(server.dsn)
            with connect(server.dsn) as c:
                add_items(c, 5, start=n + 1)
            n += 5
            first = first_commit_after(server.dsn, wf, back)
            assert first is not None, f"no commit 30s after a {outage}s outage\n" + \
                log.read_text()[-3000:]
            lags[outage] = round(first - back, 2)
            wait_done(server.dsn, wf, n)
        assert p.poll() is None, log.read_text()[-3000:]
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
    finally:
        stop_all([p])
    out = log.read_text()
    record_figure("db_back_idle", outages_s=list(OUTAGES_S), back_s=lags)
    assert all(lag <= BACK_WITHIN_S for lag in lags.values()), lags
    assert rc == 0, out[-3000:]
    assert "error:" not in out, out[-3000:]
    with connect(server.dsn) as c:
        assert all_invariants(c, wf, effect_step=3) == {}
    assert wave_records_wrong(server.dsn, wf) == []


def terminate_interp_backends(dsn: str) -> int:
    with connect(dsn) as c:
        return int(c.execute(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
            " WHERE application_name LIKE 'interp%%' AND pid <> pg_backend_pid()"
        ).fetchone()["n"])


def test_three_busy_workers_through_crashes_and_mass_termination(durable_server, tmp_path):
    """Three busy workers; PostgreSQL crashed (`-m immediate`, 2-3 s down) twice
    and every interp backend terminated twice. Nothing lost or doubled, each
    worker commits again within BACK_WITHIN_S plus one wave of each event, none
    exits early, and every wave row's `committed` equals its checkpoints."""
    server, wf, n, workers_n = durable_server, 706, 2400, 3
    script_s, batch = 0.04, 10          # a script wave: 10 x 0.04 s = 0.4 s
    wave_s = script_s * batch
    with connect(server.dsn) as c:
        chaos_pipeline(c, wf, n, script_seconds=script_s)
    rng = random.Random(7006)
    args = ("run", "--workflow", str(wf), "--until-idle", "--batch-size", str(batch),
            "--lease", "10", "--poll", "0.1")
    names = [f"busy{i}" for i in range(workers_n)]
    workers = [popen_interp(server.dsn, *args, "--worker-id", name, log=tmp_path / f"{name}.log")
               for name in names]
    events: list[dict] = []
    try:
        for name in names:  # every worker started (a slow start is not an outage)
            assert first_commit_after(server.dsn, wf, 0, worker=name, timeout=60) is not None
        for kind in ("crash", "terminate", "crash", "terminate"):
            time.sleep(rng.uniform(2.0, 3.0))
            for name, p in zip(names, workers, strict=True):
                assert p.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            if kind == "crash":
                server.stop("immediate")
                time.sleep(rng.uniform(2.0, 3.0))
                server.start()
                back, cut = db_now(server.dsn), None
            else:
                back = db_now(server.dsn)
                cut = terminate_interp_backends(server.dsn)
            lags = {}
            for name in names:
                first = first_commit_after(server.dsn, wf, back, worker=name)
                assert first is not None, f"{name}: no commit 30s after a {kind}"
                lags[name] = round(first - back, 2)
            events.append({"event": kind, "connections_cut": cut, "back_s": lags})
        for name, p in zip(names, workers, strict=True):
            rc = p.wait(240)
            assert rc == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        stop_all(workers)
    with connect(server.dsn) as c:
        violations = all_invariants(c, wf, effect_step=3)
        done = c.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
                         "AND status = 'done'", (wf,)).fetchone()["n"]
    record_figure("db_storm", workers=workers_n, subjects=n, wave_s=wave_s, events=events)
    assert violations == {}, violations
    assert done == n
    assert wave_records_wrong(server.dsn, wf) == []
    for e in events:
        assert e["event"] == "crash" or e["connections_cut"] >= workers_n, e
        assert all(lag <= BACK_WITHIN_S + wave_s for lag in e["back_s"].values()), events
