"""Workflow definitions: loaded from the interp tables into plain objects (`validate`
checks them), and the run's one pause check (`workflow_control`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from .actor_kinds import is_model_kind
from .errors import InterpError, NotFound, first_line
from .queries import Q


@dataclass(frozen=True)
class ModelDef:
    name: str
    source: str
    n_gpu_layers: int = 0
    n_ctx: int = 2048
    n_threads: int | None = None
    chat_format: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    parallel: int | None = None      # sequences served at once; None: the backend's default
    api_key_env: str | None = None   # a remote server's bearer key: the NAME of an env var
    ca_bundle: str | None = None     # PEM CA file that https:// servers are verified against
    prefix_cache_mb: int | None = None   # a local model's prefix cache; None: the default, 0: off

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelDef:
        """A model from its interp.models row (the one place that maps the columns)."""
        return cls(row["name"], row["source"], row["n_gpu_layers"], row["n_ctx"],
                   row["n_threads"], row["chat_format"], row["sampling"] or {}, row["sha256"],
                   row.get("parallel"), row.get("api_key_env"), row.get("ca_bundle"),
                   row.get("prefix_cache_mb"))


@dataclass(frozen=True)
class ActorDef:
    name: str
    kind: str          # sql | script | model
    target: str        # SQL text | module:function | model name
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepDef:
    workflow_id: int
    number: int        # execution_order
    name: str
    kind: str          # gate | actor
    actor: str | None = None
    template: str | None = None
    gate_sql: str | None = None
    output_schema: dict[str, Any] | None = None
    outcome_field: str | None = None
    max_attempts: int = 3
    timeout_s: float = 300.0
    params: dict[str, Any] = field(default_factory=dict)
    template_version: int | None = None   # a pinned version; None: the newest

    @property
    def label(self) -> str:
        return f"Step {self.number:2d} {self.name}"


def merged_params(actor: ActorDef | None, step: StepDef) -> dict[str, Any]:
    """A step's parameters: its actor's params overlaid by the step's own (the one
    merge rule that the engine, script actors and model actors all use)."""
    return {**(actor.params if actor else {}), **(step.params or {})}


@dataclass(frozen=True)
class EntryPoint:
    name: str
    admit_sql: str
    first_step: int
    enabled: bool

    def admission_statement(self) -> sql.Composed:
        """The one statement that admits this entry point's subjects. The run executes
        it, and validate executes it too (rolled back), so the two cannot disagree."""
        return sql.SQL(Q["admit"]).format(  # type: ignore[arg-type]
            admit=sql.SQL(embedded_sql(self.admit_sql)))  # type: ignore[arg-type]

    def admission_params(self, workflow_id: int, limit: int | None,
                         run_id: int | None = None) -> dict[str, Any]:
        """run_id: the run admitting, recorded as subject_state.admitted_by_run."""
        return {"workflow_id": workflow_id, "entry_point": self.name,
                "first_step": self.first_step, "limit": limit, "run_id": run_id}

    def admission_failure(self, workflow_id: int, exc: BaseException) -> str:
        """One line that names the entry point, the error and the start of its query."""
        return (f"entry point {self.name!r} of workflow {workflow_id} failed: "
                f"{first_line(exc)} (query: {excerpt(self.admit_sql)})")


def embedded_sql(text: str) -> str:
    """Author-written SQL as the body of a subquery: on lines of its own, so that a
    trailing `--` comment in it cannot swallow the closing parenthesis, and without
    the semicolons that end a statement but cannot end a subquery."""
    return "\n" + text.strip().rstrip(";").rstrip() + "\n"


def excerpt(text: str, limit: int = 200) -> str:
    """The first `limit` characters of a statement, on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


@dataclass
class Workflow:
    id: int
    name: str
    description: str
    subject_table: str
    subject_key: str
    paused: bool
    version: int
    steps: dict[int, StepDef]
    transitions: dict[int, dict[str, int | None]]  # step -> outcome -> next (None = end)
    entry_points: list[EntryPoint]
    actors: dict[str, ActorDef]
    models: dict[str, ModelDef]
    templates: dict[str, str]                       # name -> body of the newest version
    template_versions: dict[str, int] = field(default_factory=dict)
    # (name, version) -> body, for the versions that steps pin
    pinned_templates: dict[tuple[str, int], str] = field(default_factory=dict)

    def next_step(self, step: int, outcome: str) -> tuple[bool, int | None]:
        """(found, next step); found is False when no transition matches."""
        table = self.transitions.get(step, {})
        if outcome in table:
            return True, table[outcome]
        if "*" in table:
            return True, table["*"]
        return False, None

    def actor_of(self, step: StepDef) -> ActorDef | None:
        return self.actors.get(step.actor) if step.actor else None

    def params_of(self, step: StepDef) -> dict[str, Any]:
        """The step's parameters (see merged_params)."""
        return merged_params(self.actor_of(step), step)

    def model_of(self, step: StepDef) -> ModelDef | None:
        actor = self.actor_of(step)
        if actor is None or not is_model_kind(actor.kind):
            return None
        return self.models.get(actor.target)

    def template_body(self, step: StepDef) -> str | None:
        """The source of the template a step runs: its pinned version, else the newest."""
        if not step.template:
            return None
        if step.template_version is not None:
            return self.pinned_templates.get((step.template, step.template_version))
        return self.templates.get(step.template)

    def is_model_step(self, step: StepDef) -> bool:
        actor = self.actor_of(step)
        return actor is not None and is_model_kind(actor.kind)


def workflow_control(conn: psycopg.Connection[Any], workflow_id: int) -> dict[str, Any]:
    """The workflow's paused flag and definition version: the one pause check of a
    run (the lifecycle's control look, and the model lane's when a claim found
    nothing). A workflow deleted during the run is an error."""
    row = conn.execute(Q["workflow_paused_and_version"], {"workflow_id": workflow_id}).fetchone()
    if row is None:
        raise InterpError(f"workflow {workflow_id} was deleted during the run")
    return dict(row)


def workflow_paused(conn: psycopg.Connection[Any], workflow_id: int) -> bool:
    return bool(workflow_control(conn, workflow_id)["paused"])


def list_workflows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(Q["definition_workflows"]).fetchall()


def load_workflow(conn: psycopg.Connection[Any], workflow_id: int) -> Workflow:
    by_wf = {"workflow_id": workflow_id}
    w = conn.execute(Q["definition_workflow"], by_wf).fetchone()
    if w is None:
        raise NotFound(f"workflow {workflow_id} does not exist (see `interp workflow list`)")
    steps = {
        r["execution_order"]: StepDef(
            workflow_id=workflow_id, number=r["execution_order"], name=r["name"], kind=r["kind"],
            actor=r["actor"], template=r["template"], gate_sql=r["gate_sql"],
            output_schema=r["output_schema"], outcome_field=r["outcome_field"],
            max_attempts=r["max_attempts"], timeout_s=float(r["timeout_s"]), params=r["params"],
            template_version=r.get("template_version"))
        for r in conn.execute(Q["definition_steps"], by_wf)
    }
    transitions: dict[int, dict[str, int | None]] = {}
    for r in conn.execute(Q["definition_transitions"], by_wf):
        transitions.setdefault(r["from_step"], {})[r["outcome"]] = r["to_step"]
    entry_points = [EntryPoint(r["name"], r["admit_sql"], r["first_step"], r["enabled"])
                    for r in conn.execute(Q["definition_entry_points"], by_wf)]
    actor_names = sorted({s.actor for s in steps.values() if s.actor})
    actors = {r["name"]: ActorDef(r["name"], r["kind"], r["target"], r["params"])
              for r in conn.execute(Q["definition_actors"], {"names": actor_names})}
    model_names = sorted({a.target for a in actors.values() if is_model_kind(a.kind)})
    models = {r["name"]: ModelDef.from_row(r)
              for r in conn.execute(Q["definition_models"], {"names": model_names})}
    templates, versions = _newest_templates(
        conn, sorted({s.template for s in steps.values() if s.template}))
    pinned = {(r["name"], r["version"]): r["body"]
              for r in conn.execute(Q["definition_pinned_templates"], by_wf)}
    return Workflow(
        id=w["workflow_id"], name=w["name"], description=w["description"],
        subject_table=w["subject_table"], subject_key=w["subject_key"], paused=w["paused"],
        version=w["version"], steps=steps, transitions=transitions, entry_points=entry_points,
        actors=actors, models=models, templates=templates, template_versions=versions,
        pinned_templates=pinned)


def _newest_templates(conn: psycopg.Connection[Any],
                      names: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """The body and the version number of the newest version of each named template."""
    bodies: dict[str, str] = {}
    versions: dict[str, int] = {}
    for r in conn.execute(Q["definition_templates"], {"names": names}):
        bodies[r["name"]] = r["body"]
        versions[r["name"]] = r["version"]
    return bodies, versions
