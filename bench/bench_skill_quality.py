"""Workflow 3001's step 12 (Extract skills): how many extracted skills are in the posting.

The figure (issue 21): the share of extracted skills whose words all appear in
the posting's text (title and description; words are runs of letters, digits,
'+' and '#', lower-cased; a few filler words such as "and" and "of" are not
required). A list of URLs or field names scores near 0; skills copied from the
posting score 1. Also: skills per posting, and postings with at least one
grounded skill.

It creates a scratch database on the server given by --dsn / INTERP_BENCH_DSN
(an admin DSN), loads seeds/, generates N postings (`interp seed postings
--seed 42`), and runs production's skills steps only: an entry point at step
11, with step 15 ending the subject, so `interp run` runs the one model step,
12, with the workflow's own template, model and settings ("before"; --pin V
runs that template version in production). Then each template given with --try
(NAME@VERSION in the database, or a file) runs as an experiment on the same
postings (`interpreter.experiments`, production's own code path), and is
scored the same way ("after"). One JSON object to stdout.

    .venv/bin/python bench/bench_skill_quality.py --count 20 --pin 1 \\
        --try bench/skill_templates/quoted.j2 --try 3001_skills@2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import admin_exec, log, with_dbname  # noqa: E402

from interpreter.migrations import migrate  # noqa: E402

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORD = re.compile(r"[a-z0-9+#]+")
FILLER = frozenset({"a", "an", "and", "the", "of", "in", "on", "for", "to", "with", "or", "&"})

SKILLS_ONLY = """
UPDATE interp.entry_points SET enabled = false WHERE workflow_id = 3001;
INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step)
VALUES (3001, 'bench: skills only', 'SELECT posting_id AS subject_id FROM public.postings', 11);
UPDATE interp.step_transitions SET to_step = NULL WHERE workflow_id = 3001 AND from_step = 15;
"""


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def grounded(skill: Any, text_words: set[str]) -> bool:
    """Every word of the skill (filler words aside) is a word of the posting."""
    if not isinstance(skill, str):
        return False
    needed = [w for w in words(skill) if w not in FILLER]
    return bool(needed) and all(w in text_words for w in needed)


def skills_of(output: Any) -> list[Any]:
    if isinstance(output, dict) and isinstance(output.get("skills"), list):
        return list(output["skills"])
    return []   # a FAIL ({"raw", "error"}) or an error: no skills


def score(outputs: dict[str, Any], texts: dict[str, str]) -> dict[str, Any]:
    """The quality figures of step-12 outputs by subject."""
    total = hits = with_hit = 0
    for subject, output in outputs.items():
        text_words = set(words(texts.get(subject, "")))
        skills = skills_of(output)
        found = sum(1 for s in skills if grounded(s, text_words))
        total += len(skills)
        hits += found
        with_hit += found > 0
    n = len(outputs)
    return {"postings": n, "skills": total, "grounded": hits,
            "share": round(hits / total, 3) if total else 0.0,
            "skills_per_posting": round(total / n, 2) if n else 0.0,
            "postings_with_a_grounded_skill": with_hit}


def interp(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, INTERP_DSN=dsn, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "interpreter", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"interp {' '.join(args)} failed: {(proc.stderr or proc.stdout)[-2000:]}")
    return proc


def q(dsn: str, query: Any, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def setup(admin: str, name: str, count: int, pin: int | None, postings_seed: int = 42) -> str:
    """A scratch database with 3001 cut to its skills steps and `count` postings."""
    admin_exec(admin, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    admin_exec(admin, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_dbname(admin, name)
    migrate(dsn)
    interp(dsn, "seed", "load", "seeds/")
    interp(dsn, "seed", "postings", "--count", str(count), "--seed", str(postings_seed))
    q(dsn, SKILLS_ONLY)
    if pin is not None:
        q(dsn, "UPDATE interp.steps SET template_version = %s "
               "WHERE workflow_id = 3001 AND execution_order = 12", (pin,))
    return dsn


def run_production(dsn: str) -> float:
    """`interp run` until idle; its wall time."""
    t0 = time.monotonic()
    interp(dsn, "run", "--workflow", "3001", "--until-idle", "-q")
    return time.monotonic() - t0


def posting_texts(dsn: str) -> dict[str, str]:
    return {str(r["posting_id"]): f"{r['title']}\n{r['description']}"
            for r in q(dsn, "SELECT posting_id, title, coalesce(description, '') AS description "
                            "FROM public.postings")}


def production_template(dsn: str) -> str:
    """NAME@VERSION of the template step 12 runs (its pin, else the newest)."""
    return q(dsn, """
        SELECT s.template || '@' || coalesce(s.template_version, (
                   SELECT max(version) FROM interp.prompt_templates t
                    WHERE t.name = s.template)) AS t
          FROM interp.steps s WHERE workflow_id = 3001 AND execution_order = 12""")[0]["t"]


def production_outputs(dsn: str) -> dict[str, Any]:
    return {r["subject_id"]: r["output"] for r in q(dsn, """
        SELECT DISTINCT ON (subject_id) subject_id, output FROM interp.checkpoints
         WHERE workflow_id = 3001 AND step = 12 AND ok
         ORDER BY subject_id, checkpoint_id DESC""")}


def experiment(dsn: str, subjects: list[str], template: str, *, n_threads: int | None = None,
               wave_size: int = 4, model: str | None = None) -> tuple[int, float]:
    """Runs one experiment (template: NAME@VERSION or a file); its id and wall time."""
    from interpreter.config import DatabaseChoice
    from interpreter.db import Database
    from interpreter.experiments import ExperimentSpec, run_experiment

    path = Path(template)
    if path.exists():
        spec = ExperimentSpec(3001, 12, template_body=path.read_text(encoding="utf-8"),
                              template_file=str(path), sample=len(subjects),
                              subjects=tuple(subjects), model=model)
    else:
        spec = ExperimentSpec(3001, 12, template=template, sample=len(subjects),
                              subjects=tuple(subjects), model=model)
    db = Database(DatabaseChoice(dsn, "bench"), application_name="interp-experiment")
    try:
        t0 = time.monotonic()
        experiment_id = run_experiment(db, spec, n_threads=n_threads, wave_size=wave_size)
        return experiment_id, time.monotonic() - t0
    finally:
        db.close()


def experiment_outputs(dsn: str, experiment_id: int) -> dict[str, Any]:
    return {r["subject_id"]: r["output"] for r in q(
        dsn, "SELECT subject_id, output FROM interp.experiment_results WHERE experiment_id = %s",
        (experiment_id,))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN))
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--postings-seed", type=int, default=42,
                    help="the generator's seed (another seed: postings no template was tuned on)")
    ap.add_argument("--pin", type=int, help="run this version of step 12's template in production")
    ap.add_argument("--try", dest="tries", action="append", default=[],
                    help="a template to try: NAME@VERSION or a file (repeatable)")
    ap.add_argument("--model", help="try the templates with this model (a row of interp.models)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--reuse-db", help="a database kept by an earlier run (--keep): score its "
                                       "production again and try templates on it; kept")
    args = ap.parse_args()
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    if args.reuse_db:
        name, args.keep = args.reuse_db, True
        dsn, wall = with_dbname(args.dsn, name), 0.0
    else:
        name = f"interp_bench_skills_{os.getpid()}"
        dsn = setup(args.dsn, name, args.count, args.pin, args.postings_seed)
    try:
        if not args.reuse_db:
            wall = run_production(dsn)
        texts = posting_texts(dsn)
        before = production_outputs(dsn)
        result: dict[str, Any] = {
            "database": name, "postings": len(before), "postings_seed": args.postings_seed,
            "load_at_start": load,
            "production": {"template": production_template(dsn), "wall_s": round(wall, 1),
                           **score(before, texts)},
            "tried": []}
        log(f"production: {result['production']}")
        subjects = sorted(before)
        for template in args.tries:
            experiment_id, took = experiment(dsn, subjects, template, model=args.model)
            figures = {"template": template, "model": args.model or "the step's",
                       "experiment_id": experiment_id,
                       "wall_s": round(took, 1),
                       **score(experiment_outputs(dsn, experiment_id), texts)}
            result["tried"].append(figures)
            log(f"tried: {figures}")
        result["load_at_end"] = open("/proc/loadavg").read().split()[:3] if load else []
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            admin_exec(args.dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


if __name__ == "__main__":
    main()
