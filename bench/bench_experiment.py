"""An experiment's cost per subject against the same step in production, same subjects.

In one run: a scratch database with workflow 3001 cut to its skills steps (as
bench_skill_quality.py: an entry point at step 11, step 15 ends the subject),
N generated postings, `interp run --until-idle` (production runs step 12 with
its own template and model), then an experiment that replays step 12 with
production's own template version on the same N subjects, with production's
thread rule, nice 0 and waves of production's model batch size (8), so the
machinery is all that differs. Per subject, for each side:

* span: the first subject's start to the last one's finish at the step, over N
  (the model is loaded before the first subject starts on both sides);
* subject: the mean of finished - started per subject (one conversation);
* generating: the mean gen_ms per subject.

The ratio experiment / production is the cost; the target is at most 1.05.
One JSON object to stdout.

    .venv/bin/python bench/bench_experiment.py --count 20 [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from _common import admin_exec, log
from bench_skill_quality import experiment, q, run_production, setup
from psycopg import sql

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PRODUCTION_MODEL_BATCH = 8


def production_cost(dsn: str) -> dict[str, Any]:
    return q(dsn, """
        SELECT count(*) AS n,
               extract(epoch FROM max(finished_at) - min(started_at)) * 1000 / count(*)
                   AS span_ms_per_subject,
               avg(extract(epoch FROM finished_at - started_at) * 1000) AS subject_ms,
               avg(gen_ms) AS gen_ms
          FROM (SELECT DISTINCT ON (subject_id) * FROM interp.checkpoints
                 WHERE workflow_id = 3001 AND step = 12 AND ok
                 ORDER BY subject_id, checkpoint_id DESC) c""")[0]


def experiment_cost(dsn: str, experiment_id: int) -> dict[str, Any]:
    return q(dsn, """
        SELECT count(*) AS n,
               extract(epoch FROM max(r.finished_at) - min(r.started_at)) * 1000 / count(*)
                   AS span_ms_per_subject,
               avg(extract(epoch FROM r.finished_at - r.started_at) * 1000) AS subject_ms,
               avg(r.gen_ms) AS gen_ms,
               count(*) FILTER (WHERE r.output IS NOT DISTINCT FROM c.output) AS identical
          FROM interp.experiment_results r
          JOIN interp.checkpoints c USING (checkpoint_id)
         WHERE r.experiment_id = %s""", (experiment_id,))[0]


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(float(v), 1) if v is not None and k != "n" and k != "identical" else v)
            for k, v in row.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("INTERP_BENCH_DSN", DEFAULT_ADMIN_DSN))
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="experiments after production")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    load = open("/proc/loadavg").read().split()[:3]
    name = f"interp_bench_experiment_{os.getpid()}"
    dsn = setup(args.dsn, name, args.count, None)
    try:
        run_production(dsn)
        production = rounded(production_cost(dsn))
        log(f"production: {production}")
        step = q(dsn, "SELECT template, coalesce(template_version, (SELECT max(version) FROM "
                      "interp.prompt_templates t WHERE t.name = s.template)) AS v "
                      "FROM interp.steps s WHERE workflow_id = 3001 AND execution_order = 12")[0]
        subjects = sorted(r["subject_id"] for r in q(
            dsn, "SELECT DISTINCT subject_id FROM interp.checkpoints "
                 "WHERE workflow_id = 3001 AND step = 12 AND ok"))
        rounds = []
        for _ in range(args.rounds):
            experiment_id, _wall = experiment(dsn, subjects, f"{step['template']}@{step['v']}",
                                              wave_size=PRODUCTION_MODEL_BATCH)
            cost = rounded(experiment_cost(dsn, experiment_id))
            cost["ratio_span"] = round(cost["span_ms_per_subject"]
                                       / production["span_ms_per_subject"], 3)
            cost["ratio_subject"] = round(cost["subject_ms"] / production["subject_ms"], 3)
            log(f"experiment {experiment_id}: {cost}")
            rounds.append(cost)
        print(json.dumps({"postings": args.count, "load_at_start": load,
                          "production": production, "experiments": rounds,
                          "load_at_end": open("/proc/loadavg").read().split()[:3]}, indent=2))
    finally:
        if not args.keep:
            admin_exec(args.dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


if __name__ == "__main__":
    main()
