"""Thread settings for local models and the OpenMP wait policy (no model loaded)."""

import os
import subprocess
import sys
from pathlib import Path

from interpreter.definitions import ModelDef
from interpreter.llm.llama_backend import choose_threads, usable_cpus

ROOT = Path(__file__).resolve().parents[2]


def test_row_overrides_caller_overrides_default_rule():
    row = choose_threads(ModelDef("m", "x.gguf", n_threads=3), n_threads=5)
    assert (row.n_threads, row.n_threads_batch, row.chosen_by) == \
        (3, 3, "interp.models.n_threads")
    caller = choose_threads(ModelDef("m", "x.gguf"), n_threads=5)
    assert (caller.n_threads, caller.n_threads_batch) == (5, 5)
    default = choose_threads(ModelDef("m", "x.gguf"))
    cpus = usable_cpus()
    assert default.n_threads == max(1, min(8, cpus // 2))
    assert 1 <= default.n_threads_batch <= min(16, cpus)
    assert f"{cpus} usable CPUs" in default.chosen_by


def test_prompt_threads_are_the_cpus_idle_when_the_model_loads(monkeypatch):
    monkeypatch.setattr("interpreter.llm.llama_backend.usable_cpus", lambda: 2)
    quiet = choose_threads(ModelDef("m", "x.gguf"), load1=0.3)
    assert (quiet.n_threads, quiet.n_threads_batch) == (1, 2)
    assert "load average 0.30" in quiet.chosen_by
    busy = choose_threads(ModelDef("m", "x.gguf"), load1=1.4)
    assert (busy.n_threads, busy.n_threads_batch) == (1, 1)
    assert choose_threads(ModelDef("m", "x.gguf"), load1=9.0).n_threads_batch == 1
    monkeypatch.setattr("interpreter.llm.llama_backend.usable_cpus", lambda: 32)
    assert choose_threads(ModelDef("m", "x.gguf"), load1=0.0).n_threads_batch == 16
    assert choose_threads(ModelDef("m", "x.gguf"), load1=0.0).n_threads == 8


def _policy_after_import(env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    env["PYTHONPATH"] = str(ROOT)
    code = ("import os; from interpreter.llm import llama_backend as lb; "
            "lb.prepare_llama_import(); import llama_cpp; p = lb.omp_wait_policy(); "
            "print(p['omp_wait_policy'], '|', p['omp_wait_policy_set_by'])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=120).stdout.strip()


def test_passive_wait_policy_unless_the_user_chose_one():
    assert _policy_after_import(None) == "passive | interp (default)"
    assert _policy_after_import("active") == "active | the environment"
