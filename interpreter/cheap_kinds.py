"""The cheap lane's built-in actor kinds, registered in the one registry
(actor_kinds): ``sql`` (its statement over the wave, inside the wave's
transaction) and ``script`` (an allowlisted ``module:function``, on a leased
wave, or inline when its params say ``inline = true``).

A SQL actor's statement runs through the wave store's actor_statement: in a
savepoint, bounded by the step's timeout_s, a transient error redoing the wave.
Its savepoint is kept only when every result it gives will commit as a success:
its effects happen together with a success checkpoint, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .actor_api import DEFAULT_OUTCOME, StepResult, failed_wave, outcome_of, utcnow
from .actor_kinds import ActorKind, register
from .errors import DefinitionError, InternalError, StatementFailed
from .scripts import ScriptRunner, check_target, load_target
from .wave_rules import settle
from .waves import InlineWave, actor_statement


class _NotAllSucceed(InternalError):
    """Rolls a SQL actor's savepoint back: some of its results will not commit as
    successes, so its effects must not stay."""


def run_sql_actor(c: psycopg.Connection[Any], wave: InlineWave,
                  target: str) -> list[StepResult]:
    """A SQL actor: its statement over the whole wave, with the wave's earlier outputs
    bound as %(batch)s; rows it returns may name each subject's outcome and output.

    Its effects are kept only if every subject's result will commit as a success.
    Otherwise its savepoint is rolled back, the subjects whose result fails get
    it (an error checkpoint, their effects undone), and the statement runs again
    for the others, until a run's results all succeed or no subject is left."""
    done: dict[str, StepResult] = {}
    ids = wave.ids
    while ids:
        results: list[StepResult] = []
        try:
            with actor_statement(c, wave, "SQL actor"):
                results = sql_actor_results(c, wave, target, ids)
                failing = [r for r in results if not settle(
                    wave.wf, wave.step, wave.claimed[r.subject_id], r).succeeds]
                if failing:
                    raise _NotAllSucceed()
        except StatementFailed as exc:
            done.update((r.subject_id, r) for r in failed_wave(
                ids, str(exc), wave.started, actor_failure=not exc.transient))
            break
        except _NotAllSucceed:
            done.update((r.subject_id, r) for r in failing)
            ids = [i for i in ids if i not in done]
            continue
        done.update((r.subject_id, r) for r in results)
        break
    return [done[i] for i in wave.ids]


def sql_actor_results(c: psycopg.Connection[Any], wave: InlineWave, target: str,
                      ids: list[str]) -> list[StepResult]:
    """Runs a SQL actor's statement for these subjects of the wave; one result each.
    Subjects it returns no row for get DONE; an outcome of NULL or '' too."""
    params = wave.params(ids)
    # visit: the checkpoint's visit number, new after a rewind or a retry, so an
    # effect keyed by (subject, visit) is applied once per pass (docs/actors.md).
    params["batch"] = Jsonb([{"subject_id": i, "outputs": wave.outputs.get(i, {}),
                              "visit": wave.claimed[i].visits} for i in ids])
    cur = c.execute(target, params)
    rows = cur.fetchall() if cur.description else []
    finished = utcnow()
    by_id: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "subject_id" in r:
            by_id[str(r["subject_id"])] = r
    results = []
    for i in ids:
        r = by_id.get(i, {})
        results.append(StepResult(i, True, outcome_of(r.get("outcome"), DEFAULT_OUTCOME),
                                  output=r.get("output"), started_at=wave.started,
                                  finished_at=finished))
    return results


def script_problems(actor: str, target: str) -> list[str]:
    """A script target must be an allowlisted module:function that imports."""
    try:
        check_target(target)
        load_target(target)
    except DefinitionError as exc:
        return [str(exc)]
    return []


def sql_problems(actor: str, target: str) -> list[str]:
    return [] if target.strip() else [f"SQL actor {actor!r} has no SQL"]


def script_inline(params: Mapping[str, Any]) -> bool:
    return bool(params.get("inline", False))


SQL = register(ActorKind("sql", check=sql_problems, run_inline=run_sql_actor))
SCRIPT = register(ActorKind("script", check=script_problems, inline=script_inline,
                            run_wave=ScriptRunner().run_wave))
