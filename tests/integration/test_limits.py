"""Per-actor limits shared by every worker, and priorities, against the real
PostgreSQL: a rate limit holds over three workers, max_concurrency is never
exceeded (counted from the leases), claims follow priorities, and a step held by
its limit shows as `limited`, not stalled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from interpreter.config import DatabaseChoice
from interpreter.db import Database
from interpreter.engine import Runner, RunOptions
from interpreter.ops.status import status_data
from tests.helpers import add_items, check_invariants, make_workflow

WF = 61


def one_script_step(conn, *, n: int, actor_params: dict[str, Any],
                    target: str = "tests.actors.faults:ok", script_params: dict | None = None,
                    admit_sql: str | None = None) -> None:
    """items 1..n through one script step of actor `api`."""
    add_items(conn, n)
    extra = {"admit_sql": admit_sql} if admit_sql else {}
    make_workflow(conn, WF,
                  actors=[{"name": "api", "kind": "script", "target": target,
                           "params": {**actor_params, **(script_params or {})}}],
                  steps=[{"number": 1, "name": "Call the API", "actor": "api"}],
                  transitions=[(1, "*", None)], **extra)


class Workers:
    """Several Runners on one workflow, each with its own pool, in threads."""

    def __init__(self, dsn: str, n: int, **options: Any):
        self.stop = threading.Event()
        self.dbs = [Database(DatabaseChoice(dsn, "test"), db_timeout=10) for _ in range(n)]
        opts = {"poll_s": 0.05, "timeline": False, **options}
        self.runners = [Runner(db, WF, RunOptions(**opts), stop=self.stop) for db in self.dbs]
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(r,)) for r in self.runners]

    def _run(self, runner: Runner) -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.errors.append(exc)

    def start(self) -> Workers:
        for t in self.threads:
            t.start()
        return self

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout: float) -> None:
        """Lets them run until they end or `timeout` seconds have passed, then stops them."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        for t in self.threads:
            t.join(30)
        for db in self.dbs:
            db.close()
        assert not self.errors, self.errors


@pytest.fixture
def workers(dsn: str) -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for w in started:  # a failed test must not leave threads running
        w.stop.set()
        for t in w.threads:
            t.join(30)


# ---------------------------------------------------------------- rate

@pytest.mark.slow
def test_a_rate_of_5_per_s_over_3_workers_holds_within_10_percent_over_30_s(
        conn, dsn, workers) -> None:
    one_script_step(conn, n=400, actor_params={"rate_per_s": 5})
    w = Workers(dsn, 3, batch_size=100)
    workers.append(w)
    w.start()
    # The window starts at the first claim, however long the workers took to start:
    # let them run until a claim at least 31 s after it (400 subjects at 5/s last
    # 80 s, so the work does not run out first), then stop them.
    deadline = time.monotonic() + 120  # only a guard against a hang
    while not conn.execute(
            "SELECT max(claimed_at) - min(claimed_at) >= interval '31 seconds' AS enough "
            "FROM interp.waves WHERE workflow_id = %s", (WF,)).fetchone()["enough"]:
        assert w.alive() and time.monotonic() < deadline, ("no claim 31 s after the first",
                                                            w.errors)
        time.sleep(0.2)
    w.join(timeout=0)
    # When each subject was leased: the claim time of the wave that ran it.
    rows = conn.execute(
        "SELECT w.claimed_at, w.run_id FROM interp.checkpoints c "
        "JOIN interp.waves w ON w.wave_id = c.wave_id WHERE c.workflow_id = %s "
        "ORDER BY w.claimed_at", (WF,)).fetchall()
    t0 = rows[0]["claimed_at"]
    in_30s = [r for r in rows if r["claimed_at"] < t0 + timedelta(seconds=30)]
    print(f"subjects leased in 30 s at 5/s over 3 workers: {len(in_30s)}")
    # 5/s for 30 s, plus the full bucket (5 tokens) the first claim found.
    assert 135 <= len(in_30s) <= 165, len(in_30s)
    # No second had more than its share: at most the burst plus that second's tokens.
    for i in range(30):
        start = t0 + timedelta(seconds=i)
        n = sum(1 for r in rows if start <= r["claimed_at"] < start + timedelta(seconds=1))
        assert n <= 10, (i, n)
    assert len({r["run_id"] for r in rows}) >= 2, "the workers shared the work"
    assert "duplicate success" not in check_invariants(conn, WF)


# ---------------------------------------------------------------- concurrency

LEASE_RECORDER = """
CREATE TABLE public.lease_counts (n bigint NOT NULL, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION public.record_lease_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- After every statement that changes subject_state: the subjects of the step
    -- leased now (this transaction's own leases and those of committed others).
    INSERT INTO public.lease_counts (n)
    SELECT count(*) FROM interp.subject_state
     WHERE workflow_id = 61 AND step = 1 AND status = 'leased';
    RETURN NULL;
END $$;
CREATE TRIGGER record_lease_count AFTER UPDATE ON interp.subject_state
    FOR EACH STATEMENT EXECUTE FUNCTION public.record_lease_count();
"""


def test_max_concurrency_2_over_3_workers_is_never_exceeded(conn, dsn, workers) -> None:
    one_script_step(conn, n=24, actor_params={"max_concurrency": 2},
                    target="tests.actors.faults:slow", script_params={"seconds": 0.3})
    conn.execute(LEASE_RECORDER)
    seen: list[int] = []
    w = Workers(dsn, 3, batch_size=1, until_idle=True)
    workers.append(w)
    w.start()
    deadline = time.monotonic() + 60
    while w.alive() and time.monotonic() < deadline:  # and sampled from outside, too
        seen.append(conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE "
                                 "workflow_id = %s AND status = 'leased'", (WF,)).fetchone()["n"])
        time.sleep(0.02)
    w.join(timeout=60)
    recorded = [r["n"] for r in conn.execute("SELECT n FROM public.lease_counts")]
    assert max(recorded) == 2, "two subjects ran at once, never three"
    assert max(seen) <= 2
    runs = conn.execute("SELECT count(DISTINCT w.run_id) AS n FROM interp.checkpoints c JOIN "
                        "interp.waves w ON w.wave_id = c.wave_id WHERE c.workflow_id = %s",
                        (WF,)).fetchone()["n"]
    assert runs >= 2, "the limit was shared by several workers"
    assert check_invariants(conn, WF) == {}


def test_a_wave_of_a_limited_actor_is_made_smaller_not_overspent(conn, db) -> None:
    one_script_step(conn, n=30, actor_params={"rate_per_s": 0.01, "rate_burst": 7})
    runner = Runner(db, WF, RunOptions(poll_s=0.05, batch_size=100, timeline=False))
    runner.admit(None)
    runner.run_id = runner.lifecycle.start_run()   # the waves name their run
    step = runner.wf.steps[1]
    wave = runner.store.claim(step, 100, with_rows=False)
    assert wave is not None and len(wave.subjects) == 7   # the burst, not the batch
    assert runner.store.claim(step, 100, with_rows=False) is None
    assert runner.store.limit_wait(step) > 60             # ~100 s to the next token
    tokens = conn.execute("SELECT tokens FROM interp.actor_limits WHERE actor = 'api'"
                          ).fetchone()["tokens"]
    assert 0 <= tokens < 0.01
    runner.store.release(wave)


# ---------------------------------------------------------------- priorities

PRIORITY_ADMIT = """SELECT id AS subject_id,
       CASE mod(id, 3) WHEN 0 THEN 5 WHEN 1 THEN 0 ELSE -2 END AS priority
  FROM public.items"""


def priority_of(i: int) -> int:
    return {0: 5, 1: 0, 2: -2}[i % 3]


def test_waves_are_claimed_highest_priority_first_fifo_within_one(conn, db) -> None:
    one_script_step(conn, n=30, actor_params={}, admit_sql=PRIORITY_ADMIT)
    runner = Runner(db, WF, RunOptions(poll_s=0.05, batch_size=4, until_idle=True,
                                       timeline=False))
    assert runner.admit(None) == 30
    stored = {int(r["subject_id"]): r["priority"] for r in conn.execute(
        "SELECT subject_id, priority FROM interp.subject_state WHERE workflow_id = %s", (WF,))}
    assert stored == {i: priority_of(i) for i in range(1, 31)}
    # Arrival order within a priority: the higher the id, the longer it has waited.
    conn.execute("UPDATE interp.subject_state SET next_attempt_at = now() - "
                 "subject_id::int * interval '1 second' WHERE workflow_id = %s", (WF,))
    runner.run()
    order = [(r["wave_id"], int(r["subject_id"])) for r in conn.execute(
        "SELECT wave_id, subject_id FROM interp.checkpoints WHERE workflow_id = %s AND ok "
        "ORDER BY wave_id", (WF,))]
    assert len(order) == 30
    waves: dict[int, list[int]] = {}
    for wave_id, i in order:
        waves.setdefault(wave_id, []).append(i)
    # Wave by wave, the priorities never go up, and within one priority the
    # subjects come oldest first.
    claimed = [i for wave_id in sorted(waves) for i in sorted(
        waves[wave_id], key=lambda i: (-priority_of(i), -i))]
    assert [priority_of(i) for i in claimed] == sorted((priority_of(i) for i in claimed),
                                                       reverse=True)
    for p in (5, 0, -2):
        ids = [i for i in claimed if priority_of(i) == p]
        assert ids == sorted(ids, reverse=True), (p, ids)


def test_a_worker_with_priority_at_least_takes_only_urgent_work(conn, cli) -> None:
    one_script_step(conn, n=12, actor_params={}, admit_sql=PRIORITY_ADMIT)
    cli("run", "--workflow", str(WF), "--until-idle", "--priority-at-least", "5", "--quiet",
        "--poll", "0.05")
    rows = conn.execute("SELECT priority, status, count(*)::int AS n FROM interp.subject_state "
                        "WHERE workflow_id = %s GROUP BY 1, 2 ORDER BY 1, 2", (WF,)).fetchall()
    assert [(r["priority"], r["status"], r["n"]) for r in rows] == \
        [(-2, "ready", 4), (0, "ready", 4), (5, "done", 4)]


# ---------------------------------------------------------------- status

def held_step(conn, actor_params: dict[str, Any]) -> None:
    """One subject leased for a while and three ready for an hour at step 1: no
    checkpoint for an hour, so without a limit the step is stalled."""
    one_script_step(conn, n=4, actor_params=actor_params)
    conn.execute("""
        INSERT INTO interp.subject_state (workflow_id, subject_id, step, status, lease_owner,
               lease_expires, next_attempt_at, updated_at)
        SELECT %s, i::text, 1, CASE WHEN i = 1 THEN 'leased' ELSE 'ready' END,
               CASE WHEN i = 1 THEN 'w1' END,
               CASE WHEN i = 1 THEN now() + interval '5 minutes' END,
               now() - interval '1 hour', now() - interval '1 hour'
          FROM generate_series(1, 4) i""", (WF,))


def step1(conn) -> dict[str, Any]:
    data = status_data(conn, WF, stall_window_s=60)
    return next(s for s in data["steps"] if s["step"] == 1) | {"alerts": data["alerts"]}


def test_a_step_held_by_its_concurrency_limit_is_limited_not_stalled(conn, cli) -> None:
    held_step(conn, {"max_concurrency": 1})
    s = step1(conn)
    assert (s["state"], s["stalled"], s["alerts"]) == ("limited", False, [])
    proc = cli("status", "--workflow", str(WF), "--check", "--stall-window", "60", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "limited" in proc.stdout
    # With room under the limit the same step is stalled: the limit is what holds it.
    conn.execute("UPDATE interp.actors SET params = '{\"max_concurrency\": 2}' "
                 "WHERE name = 'api'")
    s = step1(conn)
    assert (s["state"], s["stalled"]) == ("stalled", True)


def test_a_step_held_by_its_rate_limit_is_limited_until_its_next_token(conn) -> None:
    held_step(conn, {"rate_per_s": 0.01})
    conn.execute("INSERT INTO interp.actor_limits (actor, tokens, refilled_at) "
                 "VALUES ('api', 0.5, now())")
    assert step1(conn)["state"] == "limited"
    # 60 s later the bucket (0.01/s) has its token back: stalled again, nothing ran.
    conn.execute("UPDATE interp.actor_limits SET refilled_at = now() - interval '60 seconds'")
    s = step1(conn)
    assert (s["state"], s["stalled"]) == ("stalled", True)
