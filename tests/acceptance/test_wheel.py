"""The wheel is the product: built from the checkout, installed in a fresh venv
(no editable install), it migrates an empty database, loads its packaged seeds
and runs workflow 1001 from a directory outside the checkout.

Dependencies come from the package index; llama-cpp-python comes from pip's
wheel cache, which the first `make install` filled (without it, pip compiles
llama.cpp again: about 10 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from interpreter import __version__
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# What a checkout holds that a build must not need (or must not see).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", ".mypy_cache",
                                    ".ruff_cache", ".interp", "results")
ENGINE_TABLES = {"workflows", "steps", "step_transitions", "entry_points", "actors", "models",
                 "prompt_templates", "runs", "subject_state", "checkpoints", "waves",
                 "actor_health", "schema_migrations"}


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n"
                                  f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    return proc


def build_wheel(work: Path) -> Path:
    """`pip wheel` on a copy of the checkout, so the build leaves nothing in it."""
    src = work / "src"
    shutil.copytree(REPO_ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    out = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        cwd=work)
    wheels = list(out.glob("interp-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def fresh_venv_with(wheel: Path, work: Path) -> Path:
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=work,
        timeout=1500)
    return venv


def outside_env(dsn: str, home: Path) -> dict[str, str]:
    """The environment of a user who has only the installed package."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "INTERP_SCRIPT_PREFIXES", "VIRTUAL_ENV")
           and not k.startswith("PG")}
    env.update(INTERP_DSN=dsn, INTERP_HOME=str(home))
    return env


def test_wheel_migrates_seeds_and_runs_workflow_1001_outside_the_checkout(empty_dsn,
                                                                          tmp_path):
    wheel = build_wheel(tmp_path)
    venv = fresh_venv_with(wheel, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = outside_env(empty_dsn, tmp_path / "home")
    python = str(venv / "bin" / "python")
    interp = str(venv / "bin" / "interp")

    # The package imported is the installed one, and it carries no test or bench code.
    where = run([python, "-c", "import actors, interpreter; print(interpreter.__file__); "
                 "print(actors.__file__)"], cwd=elsewhere, env=env).stdout.split()
    assert all(str(venv) in w for w in where), where
    site = Path(where[0]).parent.parent
    assert not (site / "tests").exists()
    assert not {"faults.py", "chaos.py", "bench_noop.py"} & {p.name for p in
                                                            (site / "actors").iterdir()}

    assert run([interp, "--version"], cwd=elsewhere, env=env).stdout.strip() == \
        f"interp, version {__version__}"

    migrated = run([interp, "db", "migrate"], cwd=elsewhere, env=env)
    assert "applied 0001_engine" in migrated.stderr
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'interp'")}
    assert ENGINE_TABLES <= tables, ENGINE_TABLES - tables

    run([interp, "seed", "load"], cwd=elsewhere, env=env)
    run([interp, "seed", "postings", "--count", "20", "--seed", "42"], cwd=elsewhere, env=env)
    run([interp, "run", "--workflow", "1001", "--until-idle"], cwd=elsewhere, env=env)

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        workflows = [r[0] for r in conn.execute(
            "SELECT workflow_id FROM interp.workflows ORDER BY 1")]
        enabled = conn.execute("SELECT count(*) FROM public.postings WHERE enabled").fetchone()[0]
        states = dict(conn.execute("SELECT status, count(*) FROM interp.subject_state "
                                   "WHERE workflow_id = 1001 GROUP BY 1").fetchall())
        counted = conn.execute("SELECT count(*) FROM public.posting_stats").fetchone()[0]
    assert workflows == [1001, 3001]
    assert enabled > 0
    assert states == {"done": enabled}, states
    assert counted == enabled
