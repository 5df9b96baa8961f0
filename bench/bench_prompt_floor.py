"""How far a run's prompt tokens could fall with the prefix cache alone: the floor.

After a run (`bench/bench_3001.py --count 20 --keep`), every model checkpoint
holds its prompt (interp.prompts). This script tokenizes each one in its model's
chat format, as interp does, and counts what a model would decode if its prefix
cache were unbounded: the prompt's tokens after the longest head it shares with
any prompt that model file (not model row: the two Gemma roles share one file)
read earlier in the run, at least the last token, whose logits the answer needs.
Beside it, per step, what the run really decoded (the audit's prompt tokens
minus the reused ones).

What the cache cannot remove is what a model has not read before: each model
file's first reading of a subject's text, and each step's own text (its
instruction, an earlier step's answer). Whatever the cache or the scheduler
does, decoded prompt tokens stay at or above this floor; only templates that
ask less, or fewer model files, go below it. Re-asks are left out of the floor
(their repeated head is reused); the audit counts them. With ``--one-file
SOURCE`` every prompt is counted as read by that one model file, in the run's
order: the floor if all the workflow's steps ran on one model.

    .venv/bin/python bench/bench_prompt_floor.py --dsn postgresql://postgres@127.0.0.1:5432/interp_bench3001_123

One JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import kept_run_models, stored_messages  # noqa: E402

from interpreter.definitions import ModelDef  # noqa: E402
from interpreter.llm.llama_backend import LlamaBackend, prepare_llama_import  # noqa: E402
from interpreter.llm.prefix_cache import common_prefix  # noqa: E402

WORK = """
SELECT c.step, c.subject_id, c.model, c.prompt_tokens, c.prompt_tokens_reused, p.body
  FROM interp.checkpoints c
  JOIN interp.prompts p ON p.sha256 = c.prompt_sha256
 WHERE c.model IS NOT NULL AND c.prompt_tokens IS NOT NULL
 ORDER BY c.started_at, c.checkpoint_id
"""
ADMITTED = "SELECT count(*) AS n FROM interp.subject_state"


def floor_of(prompt: list[int], earlier: list[list[int]]) -> int:
    """Tokens decoded with an unbounded cache: after the longest head shared with an
    earlier prompt of the same file, and at least the last one."""
    limit = len(prompt) - 1
    shared = max((common_prefix(e, prompt, limit) for e in earlier), default=0)
    return len(prompt) - shared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True, help="the database of a finished run")
    ap.add_argument("--one-file", metavar="SOURCE",
                    help="count every prompt as read by this one model file")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    with psycopg.connect(args.dsn, row_factory=dict_row) as c:
        work = c.execute(WORK).fetchall()
        models = kept_run_models(c, work)
        counted = c.execute(ADMITTED).fetchone()
        admitted = int(counted["n"]) if counted else 0
    prepare_llama_import()
    files: dict[str, list[str]] = defaultdict(list)      # source -> model rows
    for name, model in models.items():
        if args.one_file:
            models[name] = ModelDef(name, args.one_file, n_ctx=model.n_ctx)
        files[args.one_file or model.source].append(name)
    per_step: dict[int, dict[str, Any]] = {}
    for source, names in files.items():
        backend = LlamaBackend(models[names[0]])           # its tokenizer and chat format
        earlier: list[list[int]] = []
        for w in (w for w in work if w["model"] in names):
            prompt, _ = backend.prompt_tokens(stored_messages(w["body"]))
            step = per_step.setdefault(w["step"], {"model_file": source, "checkpoints": 0,
                                                   "prompt_tokens": 0, "decoded": 0,
                                                   "floor": 0, "first_ask_tokens": 0})
            step["checkpoints"] += 1
            step["prompt_tokens"] += int(w["prompt_tokens"])
            step["decoded"] += int(w["prompt_tokens"]) - int(w["prompt_tokens_reused"] or 0)
            step["first_ask_tokens"] += len(prompt)
            step["floor"] += floor_of(prompt, earlier)
            earlier.append(prompt)
        backend.close()
    total = {k: sum(s[k] for s in per_step.values())
             for k in ("prompt_tokens", "decoded", "floor", "first_ask_tokens")}
    out = {"bench": "prompt_floor", "postings_admitted": admitted,
           "per_posting": {k: round(v / max(admitted, 1), 1) for k, v in total.items()},
           "steps": {str(k): v for k, v in sorted(per_step.items())}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
