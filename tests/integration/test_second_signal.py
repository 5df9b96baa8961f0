"""A second Ctrl-C leaves at once: the process does not wait for the wave in
flight, and its leased subjects go back to ready, no attempt counted, so other
workers need not wait for the leases to expire."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.helpers import standard_pipeline

WF = 96


def leased(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
                        "AND (status = 'leased' OR lease_owner IS NOT NULL)",
                        (WF,)).fetchone()["n"]


def test_a_second_sigint_exits_at_once_and_gives_the_leases_back(conn, cli):
    # The script step hangs far longer than the test: only leaving at once ends it.
    standard_pipeline(conn, wf=WF, n=3, script_target="tests.actors.faults:hang",
                      script_params={"seconds": 600})
    proc = cli.popen("run", "--workflow", str(WF), "--until-idle", "--lease", "120",
                     stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while leased(conn) == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "no wave was leased"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # the first waits for the hanging wave
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 130, stderr
    assert took < 5, f"exit {took:.1f} s after the second SIGINT"
    assert "leaving at once (3 leased subject(s) given back)" in stderr
    assert leased(conn) == 0
    states = conn.execute("SELECT status, attempts FROM interp.subject_state "
                          "WHERE workflow_id = %s", (WF,)).fetchall()
    assert [(s["status"], s["attempts"]) for s in states] == [("ready", 0)] * 3
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = %s "
                        "AND step = 2", (WF,)).fetchone()["n"] == 0
    run = conn.execute("SELECT status FROM interp.runs WHERE workflow_id = %s",
                       (WF,)).fetchone()
    assert run["status"] == "stopped"
