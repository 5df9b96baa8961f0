"""In-doubt commits: the connection breaks during a wave's COMMIT.

The commit may have reached the server (only its reply was lost) or not. Either
way the data must be right, and so must the record: the wave row's
`committed`, the log, and the run summary. Before the fix, a leased wave whose
commit had happened was redone, found its leases cleared by its own first
commit, wrote `committed = 0` on its wave row, logged "N result(s) dropped,
their lease was lost", and the summary came up short.

The fault is deterministic: the next outermost transaction of the thread that
armed it commits for real (or is rolled back), then a connection error is
raised into Database.run, as when a server crashes at that instant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from interpreter.engine import Runner, RunOptions
from interpreter.wave_store import WaveStore
from tests.helpers import check_invariants, standard_pipeline


class CommitFault:
    """Once armed (per thread), the next outermost transaction of that thread ends
    with a lost connection: after a real COMMIT (committed=True), or after a
    rollback (committed=False: the COMMIT never reached the server)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, committed: bool):
        self.local = threading.local()
        self.fired = 0
        original = psycopg.Connection.transaction
        fault = self

        @contextmanager
        def transaction(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any
                        ) -> Iterator[Any]:
            outer = conn.pgconn.transaction_status == TransactionStatus.IDLE
            fire = outer and getattr(fault.local, "armed", False)
            if fire:
                fault.local.armed = False
            with original(conn, *args, **kwargs) as tx:
                yield tx
                if fire and not committed:
                    raise psycopg.Rollback()
            if fire:
                fault.fired += 1
                raise psycopg.OperationalError(
                    "server closed the connection unexpectedly (injected after COMMIT)")

        monkeypatch.setattr(psycopg.Connection, "transaction", transaction)

    def arm(self) -> None:
        self.local.armed = True


def arm_before(monkeypatch: pytest.MonkeyPatch, fault: CommitFault, method: str) -> None:
    """Arms the fault at each call of WaveStore.<method> (a wave's commit)."""
    original = getattr(WaveStore, method)

    def armed(self: WaveStore, *args: Any, **kwargs: Any) -> Any:
        fault.arm()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WaveStore, method, armed)


def run(db, wf: int) -> Any:
    return Runner(db, wf, RunOptions(until_idle=True, poll_s=0.05, batch_size=5,
                                     timeline=False)).run()


def records(conn, wf: int, run_id: int) -> dict[str, Any]:
    """What the run wrote, and what its wave rows say it wrote."""
    total = conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE run_id = %s",
                         (run_id,)).fetchone()["n"]
    waves = conn.execute(
        "SELECT w.wave_id, w.step, w.committed, (SELECT count(*) FROM interp.checkpoints c "
        "WHERE c.wave_id = w.wave_id) AS written FROM interp.waves w "
        "WHERE w.workflow_id = %s ORDER BY w.wave_id", (wf,)).fetchall()
    return {"checkpoints": total, "waves": waves,
            "mismatched": [w for w in waves if w["committed"] != w["written"]]}


def test_a_leased_commit_whose_reply_was_lost_is_recorded_as_committed(db, conn, monkeypatch,
                                                                       caplog):
    standard_pipeline(conn, wf=60, n=20)  # gate (inline) -> script (leased) -> SQL (inline)
    fault = CommitFault(monkeypatch, committed=True)
    arm_before(monkeypatch, fault, "commit")
    with caplog.at_level(logging.WARNING):
        summary = run(db, 60)
    assert fault.fired == 4  # the script step's 4 waves of 5, each commit in doubt once
    got = records(conn, 60, summary.run_id)
    assert got["mismatched"] == []
    assert sum(w["committed"] for w in got["waves"] if w["step"] == 2) == 20
    assert summary.checkpoints == got["checkpoints"] == 60
    assert summary.by_step == {1: 20, 2: 20, 3: 20}
    assert "dropped" not in caplog.text
    assert "not redone" in caplog.text
    assert check_invariants(conn, 60, effect_step=3) == {}


def test_an_inline_commit_whose_reply_was_lost_is_counted_once(db, conn, monkeypatch):
    standard_pipeline(conn, wf=61, n=20)
    fault = CommitFault(monkeypatch, committed=True)
    arm_before(monkeypatch, fault, "run_inline")
    summary = run(db, 61)
    assert fault.fired >= 4  # the gate's and the SQL actor's waves (and empty looks)
    got = records(conn, 61, summary.run_id)
    assert got["mismatched"] == []
    assert summary.checkpoints == got["checkpoints"] == 60
    assert summary.by_step == {1: 20, 2: 20, 3: 20}
    assert check_invariants(conn, 61, effect_step=3) == {}


def test_a_commit_that_never_reached_the_server_is_redone(db, conn, monkeypatch, caplog):
    standard_pipeline(conn, wf=62, n=20)
    fault = CommitFault(monkeypatch, committed=False)
    arm_before(monkeypatch, fault, "commit")
    arm_before(monkeypatch, fault, "run_inline")
    with caplog.at_level(logging.WARNING):
        summary = run(db, 62)
    assert fault.fired >= 12
    got = records(conn, 62, summary.run_id)
    assert got["mismatched"] == []
    assert summary.checkpoints == got["checkpoints"] == 60
    assert "dropped" not in caplog.text and "not redone" not in caplog.text
    assert check_invariants(conn, 62, effect_step=3) == {}
