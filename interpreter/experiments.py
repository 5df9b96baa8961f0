"""Experiments: try a template, a model or sampling settings on subjects that
already passed a model step, without touching production (docs/adr/0006-experiments.md).

An experiment picks subjects with a successful checkpoint at the step, rebuilds
the inputs that checkpoint's wave saw (the subject's row, and each earlier
step's latest output committed before it: what ``subject_state.outputs`` held
at the claim), and runs the step's own model actor code (``run_model_wave``:
the same rendering, context fitting, grammar, validation, re-asks and outcome
rule) with the change applied. Its results go to ``interp.experiment_results``
and nowhere else: no effects, no transitions, no state, no checkpoints, no
waves, no runs, no breaker. ``compare`` sets them beside what production
recorded for the same subjects.

Priority against production (ADR 0006): the experiment is its own process. It
lowers its CPU priority (``os.nice``) before any model thread exists, so every
thread of it inherits the lower priority, loads its model with fewer threads
than production's default, and, with ``wait_for_production``, waits before its
model load and between its small waves while a running production run is
generating with the same model. The model is loaded before the experiment is
recorded: one that cannot load is refused, like a template validate refuses.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .actor_api import StepResult, Subject
from .actor_kinds import is_model_kind
from .db import Database, one
from .definitions import ModelDef, StepDef, Workflow, load_workflow
from .errors import DefinitionError, NotFound
from .llm.pool import ModelPool
from .model_actor import run_model_wave
from .param_rules import sampling_problems
from .queries import Q
from .templates import template_problems
from .wave_rules import check_result, dump_output, normalise_result

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = 10
DEFAULT_WAVE = 4                 # subjects per experiment wave (results written per wave)
OUTPUT_LIMIT = 1_000_000         # bytes of one output's JSON
WAIT_WITHIN_S = 5.0              # production generated within this many seconds: busy
WAIT_POLL_S = 1.0
MODEL_MEMORY_MB = 4096


@dataclass(frozen=True)
class ExperimentSpec:
    """What to try: at least one of template, template_body, model and sampling."""

    workflow_id: int
    step: int
    template: str | None = None          # NAME or NAME@VERSION from interp.prompt_templates
    template_body: str | None = None     # a template's source (from --template-file)
    template_file: str | None = None     # where template_body came from, for the record
    model: str | None = None             # a row of interp.models
    sampling: dict[str, Any] | None = None
    sample: int = DEFAULT_SAMPLE
    subjects: tuple[str, ...] | None = None
    seed: int = 0

    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.template:
            out["template"] = self.template
        if self.template_body is not None:
            out["template_file"] = self.template_file or "-"
            out["template_sha256"] = hashlib.sha256(self.template_body.encode()).hexdigest()
        if self.model:
            out["model"] = self.model
        if self.sampling:
            out["sampling"] = self.sampling
        return out


@dataclass
class Input:
    """One subject as the step saw it, and the production checkpoint it came from."""

    subject_id: str
    checkpoint_id: int
    visit: int                   # the checkpoint's visit (the subject's transition counter)
    row: dict[str, Any]
    outputs: dict[str, Any]
    visit_of_step: int = 1       # which pass through this step it was

    def subject(self) -> Subject:
        return Subject(self.subject_id, self.row or {}, self.outputs or {}, attempt=1,
                       visit_of_step=self.visit_of_step)


@dataclass
class Plan:
    """A resolved experiment: the workflow and step with the change applied, and the inputs."""

    wf: Workflow
    step: StepDef
    model: ModelDef
    template_body: str
    changes: dict[str, Any]
    inputs: list[Input] = field(default_factory=list)


def parse_template_ref(text: str) -> tuple[str, int | None]:
    """NAME or NAME@VERSION."""
    name, at, version = text.rpartition("@")
    if not at:
        return text, None
    if not name or not version.isdigit() or int(version) < 1:
        raise DefinitionError(f"--template {text!r}: expected NAME or NAME@VERSION "
                              f"(a version is a positive integer)")
    return name, int(version)


def plan_experiment(conn: psycopg.Connection[Any], spec: ExperimentSpec) -> Plan:
    """The workflow and step with the change applied, and the chosen subjects with their
    inputs; raises NotFound / DefinitionError with one line."""
    wf = load_workflow(conn, spec.workflow_id)
    step = wf.steps.get(spec.step)
    if step is None:
        raise NotFound(f"workflow {wf.id} has no step {spec.step}")
    actor = wf.actor_of(step)
    if actor is None or not is_model_kind(actor.kind):
        kind = actor.kind if actor else step.kind
        raise DefinitionError(f"step {spec.step} ({step.name}) is a {kind} step: experiments "
                              f"run model steps only (a SQL or script step has effects)")
    if spec.template and spec.template_body is not None:
        raise DefinitionError("give --template or --template-file, not both")
    if spec.sample < 1:
        raise DefinitionError("--sample must be at least 1")
    changes = spec.changes()
    if not changes:
        raise DefinitionError("nothing to try: give --template, --template-file, --model or "
                              "--sampling (to replay production as it is, name its own template, "
                              "e.g. --template NAME@VERSION)")
    wf, step, body = _with_template(conn, wf, step, spec)
    if spec.template or spec.template_body is not None:
        _check_template(conn, wf, step, body)
    wf, step = _with_model(conn, wf, step, spec.model)
    problems = sampling_problems("--sampling", spec.sampling)
    if problems:
        raise DefinitionError("; ".join(problems))
    if spec.sampling:
        sampling = {**((step.params or {}).get("sampling") or {}), **spec.sampling}
        step = replace(step, params={**(step.params or {}), "sampling": sampling})
        wf.steps = {**wf.steps, step.number: step}
    model = wf.model_of(step)
    if model is None:
        raise DefinitionError(f"step {step.number}: model {actor.target!r} is not in interp.models")
    plan = Plan(wf, step, model, body, changes)
    plan.inputs = select_inputs(conn, wf, step.number, spec)
    return plan


def _check_template(conn: psycopg.Connection[Any], wf: Workflow, step: StepDef,
                    body: str) -> None:
    """Refuses a tried template that `interp workflow validate` would refuse at the step
    (a syntax error, an unknown name, a field no earlier step's schema has): it would
    fail every subject. Any other step's output counts as available here."""
    columns = {r["attname"] for r in conn.execute(Q["validate_subject_columns"],
                                                  {"table": wf.subject_table})}
    available = {n: s.output_schema for n, s in wf.steps.items() if n != step.number}
    problems = template_problems(body, columns, available)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DefinitionError(f"step {step.number}: the template tried ({step.template}): "
                              f"{problems[0]}{more}; nothing was run")


def _with_template(conn: psycopg.Connection[Any], wf: Workflow, step: StepDef,
                   spec: ExperimentSpec) -> tuple[Workflow, StepDef, str]:
    if spec.template_body is not None:
        name, version, body = f"file:{spec.template_file or '-'}", None, spec.template_body
    elif spec.template:
        name, version = parse_template_ref(spec.template)
        row = conn.execute(Q["experiment_template"], {"name": name, "version": version}).fetchone()
        if row is None:
            raise NotFound(f"template {spec.template!r} does not exist in "
                           f"interp.prompt_templates")
        version, body = row["version"], row["body"]
    else:
        current = wf.template_body(step)
        if current is None:
            raise DefinitionError(f"step {step.number}: its template {step.template!r} does "
                                  f"not exist")
        return wf, step, current
    key = f"{name}@{version}" if version else name
    tried = replace(step, template=key, template_version=None)
    wf = replace(wf, templates={**wf.templates, key: body},
                 steps={**wf.steps, step.number: tried})
    return wf, tried, body


def _with_model(conn: psycopg.Connection[Any], wf: Workflow, step: StepDef,
                model: str | None) -> tuple[Workflow, StepDef]:
    if not model:
        return wf, step
    rows = conn.execute(Q["definition_models"], {"names": [model]}).fetchall()
    if not rows:
        raise NotFound(f"model {model!r} is not in interp.models (see `interp models list`)")
    actor = wf.actor_of(step)
    assert actor is not None
    tried_actor = replace(actor, name=f"{actor.name}~experiment", target=model)
    tried = replace(step, actor=tried_actor.name)
    wf = replace(wf, actors={**wf.actors, tried_actor.name: tried_actor},
                 models={**wf.models, model: ModelDef.from_row(rows[0])},
                 steps={**wf.steps, step.number: tried})
    return wf, tried


def select_inputs(conn: psycopg.Connection[Any], wf: Workflow, step: int,
                  spec: ExperimentSpec) -> list[Input]:
    key = conn.execute(Q["key_type"], {"table": wf.subject_table,
                                       "key": wf.subject_key}).fetchone()
    if not key or not key["key_type"]:
        raise DefinitionError(f"workflow {wf.id}: subject table {wf.subject_table} has no "
                              f"column {wf.subject_key}")
    query = sql.SQL(Q["experiment_subjects"]).format(  # type: ignore[arg-type]
        subject_table=sql.Identifier(*wf.subject_table.split(".")),
        subject_key=sql.Identifier(wf.subject_key), key_type=sql.SQL(key["key_type"]))
    named = list(dict.fromkeys(spec.subjects)) if spec.subjects else None
    rows = conn.execute(query, {
        "workflow_id": wf.id, "step": step, "subjects": named, "seed": str(spec.seed),
        "sample": len(named) if named else spec.sample}).fetchall()
    if named:
        missing = [s for s in named if s not in {r["subject_id"] for r in rows}]
        if missing:
            raise NotFound(f"{len(missing)} of the subjects named have no successful checkpoint "
                           f"at step {step} of workflow {wf.id}: {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}")
    if not rows:
        raise NotFound(f"no subject of workflow {wf.id} has passed step {step} yet")
    return [Input(r["subject_id"], r["checkpoint_id"], r["visit"], r["row"] or {},
                  r["outputs"] or {}, int(r["visit_of_step"])) for r in rows]


# ---------------------------------------------------------------- running

def lower_priority(nice: int) -> int:
    """Adds `nice` to this process's niceness (before model threads exist, so they
    inherit it); returns the new niceness."""
    if nice <= 0:
        return os.nice(0)
    try:
        return os.nice(nice)
    except OSError:   # pragma: no cover - a platform without nice
        return 0


def default_threads() -> int:
    """Half the CPUs (at least one): the experiment leaves production the rest."""
    return max(1, (os.cpu_count() or 2) // 2)


def chunks(items: list[Input], size: int) -> Iterator[list[Input]]:
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def run_experiment(db: Database, spec: ExperimentSpec, *, n_threads: int | None = None,
                   wave_size: int = DEFAULT_WAVE, wait_for_production: bool = False,
                   pool: ModelPool | None = None,
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Runs an experiment to its end; returns its id. Production's tables are only read.
    n_threads None loads the model with production's thread rule.

    The experiment's header row is written first (status running) and ended as
    finished, failed or stopped (Ctrl-C), so an experiment that died says so."""
    plan = db.run(lambda c: plan_experiment(c, spec))
    # n_threads None: production's own rule (models.choose_threads).
    pool = pool or ModelPool(MODEL_MEMORY_MB * 1024 * 1024, n_threads=n_threads)
    # Loaded before the experiment is recorded: a model that cannot load (no file, a
    # bad server) is one line and no experiment, not an experiment of errors.
    if wait_for_production:
        wait_while_production_generates(db, plan.model)
    pool.acquire(plan.model)
    experiment_id = db.run(lambda c: one(c.execute(Q["experiment_start"], {
        "workflow_id": spec.workflow_id, "step": spec.step, "changes": Jsonb(plan.changes),
        "template_body": plan.template_body, "seed": spec.seed, "requested": len(plan.inputs),
        "os_user": _os_user(), "host": socket.gethostname(), "pid": os.getpid()}))
    )["experiment_id"]
    status, error = "finished", None
    done = 0
    try:
        for wave in chunks(plan.inputs, wave_size):
            if wait_for_production:
                wait_while_production_generates(db, plan.model)
            results = run_model_wave(pool, plan.wf, plan.step, [i.subject() for i in wave])
            db.run(functools.partial(write_results, experiment_id=experiment_id, plan=plan,
                                     wave=wave, results=results))
            done += len(results)
            if progress is not None:
                progress(done, len(plan.inputs))
    except KeyboardInterrupt:
        status, error = "stopped", "stopped by the user"
        raise
    except BaseException as exc:
        status, error = "failed", f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"
        raise
    finally:
        db.run(lambda c: c.execute(Q["experiment_finish"], {
            "experiment_id": experiment_id, "status": status, "error": error}))
    return int(experiment_id)


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is not an error
        return None


def wait_while_production_generates(db: Database, model: ModelDef,
                                    max_wait_s: float = 3600.0) -> float:
    """Waits while a running production run generated lately with a model of the same
    source; the seconds waited (at most max_wait_s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait_s:
        busy = db.run(lambda c: one(c.execute(Q["experiment_production_generating"], {
            "source": model.source, "within_s": WAIT_WITHIN_S}))["busy"])
        if not busy:
            break
        time.sleep(WAIT_POLL_S)
    return time.monotonic() - t0


def write_results(conn: psycopg.Connection[Any], experiment_id: int, plan: Plan,
                  wave: list[Input], results: list[StepResult]) -> None:
    by_id = {i.subject_id: i for i in wave}
    rows = []
    for raw in results:
        result = normalise_result(check_result(plan.step, raw))
        source = by_id.get(result.subject_id)
        if source is None:
            continue
        text, problem = dump_output(result.output, OUTPUT_LIMIT)
        audit = result.audit or {}
        rows.append({
            "experiment_id": experiment_id, "subject_id": result.subject_id,
            "checkpoint_id": source.checkpoint_id, "visit": source.visit,
            "ok": result.ok and problem is None,
            "outcome": result.outcome if problem is None else "ERROR",
            "output": text, "error": result.error or problem, "tries": audit.get("tries"),
            "started_at": result.started_at, "finished_at": result.finished_at,
            "model": audit.get("model"), "model_sha256": audit.get("model_sha256"),
            "seed": audit.get("seed"),
            "sampling": Jsonb(audit["sampling"]) if audit.get("sampling") else None,
            "prompt_tokens": audit.get("prompt_tokens"),
            "completion_tokens": audit.get("completion_tokens"), "gen_ms": audit.get("gen_ms"),
            "prompt_sha256": audit.get("prompt_sha256"), "batch_width": audit.get("batch_width"),
        })
    if rows:
        with conn.cursor() as cur:
            cur.executemany(Q["experiment_result"], rows)


# ---------------------------------------------------------------- comparing

def schema_valid(output: Any, schema: dict[str, Any] | None) -> bool:
    """Whether an output is an answer the step's schema accepts (the same test for
    production's checkpoint and the experiment's result)."""
    if output is None:
        return False
    if schema is None:
        return True
    try:
        jsonschema.validate(output, schema)
    except jsonschema.ValidationError:
        return False
    return True


def _mean(values: list[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(sum(known) / len(known), 1) if known else None


def compare(conn: psycopg.Connection[Any], experiment_id: int, *,
            differences: int = 3) -> dict[str, Any]:
    """The experiment beside production, for the same subjects: outcomes, schema-valid
    rates, re-asks, tokens and time per subject, identical outputs, and the first
    few outputs that differ."""
    header = conn.execute(Q["experiment_header"], {"experiment_id": experiment_id}).fetchone()
    if header is None:
        raise NotFound(f"experiment {experiment_id} does not exist "
                       f"(see `interp experiment list`)")
    wf = load_workflow(conn, header["workflow_id"])
    step = wf.steps.get(header["step"])
    schema = step.output_schema if step else None
    pairs = conn.execute(Q["experiment_pairs"], {"experiment_id": experiment_id}).fetchall()
    confusion: Counter[tuple[str, str]] = Counter()
    for p in pairs:
        confusion[(p["prod_outcome"] or "(pruned)", p["exp_outcome"])] += 1
    n = len(pairs)

    def side(prefix: str) -> dict[str, Any]:
        valid = sum(1 for p in pairs if p[f"{prefix}_output"] is not None
                    and (prefix == "prod" or p["exp_ok"])
                    and schema_valid(p[f"{prefix}_output"], schema)
                    and not _is_rejected(p[f"{prefix}_output"], schema))
        tries = [p["exp_tries"] for p in pairs] if prefix == "exp" else []
        return {
            "subjects": n,
            "schema_valid": valid,
            "schema_valid_rate": round(valid / n, 3) if n else None,
            "reasks": (sum(max(0, t - 1) for t in tries if t) if prefix == "exp" else None),
            "prompt_tokens_per_subject": _mean([p[f"{prefix}_prompt_tokens"] for p in pairs]),
            "completion_tokens_per_subject":
                _mean([p[f"{prefix}_completion_tokens"] for p in pairs]),
            "gen_ms_per_subject": _mean([p[f"{prefix}_gen_ms"] for p in pairs]),
            "ms_per_subject": _mean([p[f"{prefix}_ms"] for p in pairs]),
            "model": next((p[f"{prefix}_model"] for p in pairs if p[f"{prefix}_model"]), None),
        }

    differing = [p for p in pairs if not p["identical"]]
    return {
        "experiment": {k: header[k] for k in (
            "experiment_id", "workflow_id", "step", "changes", "seed", "requested", "status",
            "error", "db_role", "os_user", "host", "started_at", "finished_at")},
        "step_name": step.name if step else None,
        "subjects": n,
        "identical": sum(1 for p in pairs if p["identical"]),
        # the prompt asked was the same text as production's (its sha256): the inputs
        # were rebuilt exactly, and the template renders the same
        "same_prompt": sum(1 for p in pairs if p["same_prompt"]),
        "confusion": [{"production": a, "experiment": b, "subjects": c}
                      for (a, b), c in sorted(confusion.items())],
        "figures": {"production": side("prod"), "experiment": side("exp")},
        "differences": [{"subject_id": p["subject_id"], "production": p["prod_output"],
                         "experiment": p["exp_output"], "production_outcome": p["prod_outcome"],
                         "experiment_outcome": p["exp_outcome"], "error": p["exp_error"]}
                        for p in differing[:differences]],
    }


def _is_rejected(output: Any, schema: dict[str, Any] | None) -> bool:
    """A model step's FAIL after its re-asks stores {"raw", "error"}: not a valid answer
    (it cannot match a schema that does not allow those fields, but a schema without
    properties would accept it)."""
    return (schema is not None and isinstance(output, dict)
            and set(output) == {"raw", "error"})


def list_experiments(conn: psycopg.Connection[Any], workflow_id: int | None,
                     limit: int = 50) -> list[dict[str, Any]]:
    return conn.execute(Q["experiment_list"], {"workflow_id": workflow_id,
                                               "limit": limit}).fetchall()


def format_report(report: dict[str, Any], width: int = 60) -> str:
    """The comparison as text: a header, the confusion table, the figures side by side,
    and the first differing outputs."""
    from tabulate import tabulate

    e = report["experiment"]
    lines = [f"experiment {e['experiment_id']}: workflow {e['workflow_id']} step {e['step']} "
             f"({report['step_name']}), {report['subjects']} subjects, {e['status']}"
             + (f" ({e['error']})" if e.get("error") else ""),
             f"changed: {json.dumps(e['changes'], sort_keys=True)}; seed {e['seed']}; "
             f"by {e['os_user'] or '?'} as {e['db_role']} at {e['started_at']:%Y-%m-%d %H:%M:%S}",
             f"identical outputs: {report['identical']} of {report['subjects']}; "
             f"same prompt as production: {report['same_prompt']} of {report['subjects']}", "",
             "outcomes (rows: production, columns: experiment):"]
    rows_p = sorted({c["production"] for c in report["confusion"]})
    cols_e = sorted({c["experiment"] for c in report["confusion"]})
    cell = {(c["production"], c["experiment"]): c["subjects"] for c in report["confusion"]}
    lines.append(tabulate([[r, *[cell.get((r, c), 0) for c in cols_e]] for r in rows_p],
                          headers=["production \\ experiment", *cols_e]))
    lines.append("")
    p, x = report["figures"]["production"], report["figures"]["experiment"]
    figures = [
        ("model", p["model"], x["model"]),
        ("schema-valid", f"{p['schema_valid']} of {p['subjects']}",
         f"{x['schema_valid']} of {x['subjects']}"),
        ("re-asks", "not recorded", x["reasks"]),
        ("prompt tokens / subject", p["prompt_tokens_per_subject"],
         x["prompt_tokens_per_subject"]),
        ("completion tokens / subject", p["completion_tokens_per_subject"],
         x["completion_tokens_per_subject"]),
        ("generating ms / subject", p["gen_ms_per_subject"], x["gen_ms_per_subject"]),
        ("ms / subject", p["ms_per_subject"], x["ms_per_subject"]),
    ]
    lines.append(tabulate(figures, headers=["", "production", "experiment"]))
    if report["differences"]:
        lines += ["", f"first {len(report['differences'])} differing outputs:"]
        table = [[d["subject_id"], _cut(d["production"], width), _cut(d["experiment"], width)]
                 for d in report["differences"]]
        lines.append(tabulate(table, headers=["subject", "production", "experiment"],
                              tablefmt="simple", maxcolwidths=[None, width, width]))
    return "\n".join(lines)


def _cut(value: Any, width: int) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "(none)"
    return text if len(text) <= 3 * width else text[:3 * width - 3] + "..."
