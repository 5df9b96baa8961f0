"""Stopping a worker: the heartbeat keeps its pace while waves finish, and a stop
during a model generation ends the process within seconds."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from interpreter.engine import Runner, RunOptions
from tests.helpers import add_items, check_invariants, make_workflow, standard_pipeline

BEATS_DDL = """
CREATE TABLE public.beats (at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.count_beat() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO public.beats DEFAULT VALUES; RETURN NULL; END $$;
CREATE TRIGGER count_beat AFTER UPDATE OF heartbeat_at ON interp.runs
   FOR EACH ROW WHEN (NEW.heartbeat_at IS DISTINCT FROM OLD.heartbeat_at)
   EXECUTE FUNCTION public.count_beat();
"""


def test_heartbeat_keeps_its_interval_while_a_wave_finishes_after_stop(db, conn):
    standard_pipeline(conn, wf=90, n=3, script_target="tests.actors.faults:hang",
                      script_params={"seconds": 2.5})
    conn.execute(BEATS_DDL)
    stop = threading.Event()
    runner = Runner(db, 90, RunOptions(poll_s=0.05, lease_s=3), stop=stop)  # a beat a second
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 20
    while conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 90 "
                       "AND status = 'leased'").fetchone()["n"] == 0:
        assert time.monotonic() < deadline, "the script wave was never leased"
        time.sleep(0.05)
    stopped_at = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    stop.set()  # the leased wave still runs for about 2.5 s
    thread.join(30)
    assert not thread.is_alive()
    beats = conn.execute("SELECT count(*) AS n FROM public.beats WHERE at >= %s",
                         (stopped_at,)).fetchone()["n"]
    assert 1 <= beats <= 4, f"{beats} heartbeats in the ~2.5 s after stop"
    # the wave finished and committed under its renewed lease
    assert "lease left" not in check_invariants(conn, 90)
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 90 "
                        "AND step = 2 AND ok").fetchone()["n"] == 3
    assert conn.execute("SELECT status FROM interp.runs").fetchone()["status"] == "stopped"


@pytest.mark.slow
@pytest.mark.model
def test_sigterm_during_a_long_generation_exits_within_seconds(conn, cli, smollm2):
    # SmolLM2 at temperature 0 asked this fills all 1500 tokens (about 40 s on a
    # busy CPU), so SIGTERM lands inside one generation.
    add_items(conn, 2, title="Repeat the word hello 3000 times.")
    conn.execute("INSERT INTO interp.models (name, source, n_ctx) VALUES ('smol92', %s, 2048)",
                 (str(smollm2),))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES ('long92', "
                 "'model', 'smol92', '{\"max_tokens\": 1500, \"reask\": 0}')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t92', '{{ title }}')")
    make_workflow(conn, 92, steps=[{"number": 1, "actor": "long92", "template": "t92",
                                    "timeout_s": 600}],
                  transitions=[(1, "*", None)])
    proc = cli.popen("run", "--workflow", "92", "--until-idle", "--model-batch-size", "1")
    try:
        deadline = time.monotonic() + 120
        while conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE "
                           "workflow_id = 92 AND status = 'leased'").fetchone()["n"] == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "no model wave began"
            time.sleep(0.1)
        time.sleep(3.0)  # the model is loaded and generating
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    # Generous for a busy CPU; the target is about 5 s.
    assert took < 15, f"exit {took:.1f} s after SIGTERM"
    assert conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 92"
                        ).fetchone()["n"] == 0  # the aborted generation wrote nothing
    left = conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 92 "
                        "AND (status = 'leased' OR lease_owner IS NOT NULL)").fetchone()["n"]
    assert left == 0  # what did not finish was released ...
    assert conn.execute("SELECT max(attempts) AS n FROM interp.subject_state "
                        "WHERE workflow_id = 92").fetchone()["n"] == 0  # ... and not charged
    assert conn.execute("SELECT status FROM interp.runs WHERE workflow_id = 92"
                        ).fetchone()["status"] == "stopped"
