"""The operator verbs: retry, rewind and cancel subjects by hand (docs/ops.md,
"Retry, rewind and cancel").

Each verb is one set-based statement per selection (sql/operator.sql): it
selects the subjects, locks those it may move, moves them and records the
action in interp.operator_actions (and each subject it moved in
interp.operator_action_subjects), all in one transaction. A subject held by a
running wave (a live lease, or a row a wave's transaction has locked) is never
moved under it: it is skipped and counted, and the operator runs the verb again
later if they still want it moved.

Before that statement, the selection is checked: unknown steps, ids that are
no value of the subject key's type and subjects that do not exist are refused
with one line, and nothing changes. An operator's `--where` predicate over the
subject table runs first, on its own connection, in a READ ONLY transaction
with a statement timeout; only the ids it returns reach the writing statement.
"""

from __future__ import annotations

import getpass
import re
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .db import Database, is_connection_problem, json_row, one
from .errors import DatabaseUnreachable, InterpError, NotFound, first_line
from .queries import Q

#: Every status a subject can be in (interp.subject_state.status).
STATUSES = ("ready", "leased", "done", "dead", "cancelled")
#: How long the operator's --where may run, by default (seconds).
WHERE_TIMEOUT_S = 60.0
#: How many subject ids a result shows.
SAMPLE = 10
_OUTCOME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Verb:
    name: str
    eligible: tuple[str, ...]    # the statuses it moves
    default: tuple[str, ...]     # the statuses it moves when --status is not given
    to_status: str
    needs_selection: bool        # refuse to act on the whole workflow without --all


VERBS = {
    # Dead letters back to the queue; cancelled subjects only when asked (--status
    # cancelled): someone stopped those on purpose.
    "retry": Verb("retry", ("dead", "cancelled"), ("dead",), "ready", needs_selection=False),
    # Anything not held by a running wave; a leased subject whose lease expired
    # belongs to a dead worker and is waiting in all but name.
    "rewind": Verb("rewind", STATUSES, STATUSES, "ready", needs_selection=True),
    "cancel": Verb("cancel", ("ready", "leased", "dead"), ("ready", "leased", "dead"),
                   "cancelled", needs_selection=True),
}


@dataclass(frozen=True)
class Selection:
    """Which subjects an action is about. Every criterion given must hold (AND);
    none given means every subject the verb applies to (`--all`)."""

    subjects: tuple[str, ...] = ()
    step: int | None = None
    outcome_at: tuple[int, str] | None = None
    error_like: str | None = None
    statuses: tuple[str, ...] = ()
    where: str | None = None
    everything: bool = False

    def is_empty(self) -> bool:
        return not (self.subjects or self.step is not None or self.outcome_at
                    or self.error_like or self.statuses or self.where)

    def as_json(self) -> dict[str, Any]:
        """The selection as the operator gave it (recorded with the action)."""
        out: dict[str, Any] = {}
        if self.subjects:
            out["subjects"] = list(self.subjects)
        if self.step is not None:
            out["step"] = self.step
        if self.outcome_at:
            out["outcome_at"] = {"step": self.outcome_at[0], "outcome": self.outcome_at[1]}
        if self.error_like:
            out["error_like"] = self.error_like
        if self.statuses:
            out["status"] = list(self.statuses)
        if self.where:
            out["where"] = self.where
        if self.everything or not out:
            out["all"] = True
        return out


def parse_outcome_at(text: str) -> tuple[int, str]:
    """'12=UNCLEAR' -> (12, 'UNCLEAR'); the outcome is a label, upper-cased."""
    step, sep, outcome = (text or "").partition("=")
    outcome = outcome.strip().upper()
    if not sep or not step.strip().lstrip("-").isdigit() or not _OUTCOME.match(outcome):
        raise InterpError(f"--outcome-at {text!r}: write STEP=OUTCOME, like 12=UNCLEAR")
    return int(step), outcome


def parse_statuses(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """--status values, each one or several comma-separated; 'waiting' is 'ready'."""
    out: list[str] = []
    for value in values:
        if not value.strip(", "):
            raise InterpError(f"--status {value!r} names no status")
        for part in value.split(","):
            s = part.strip().lower()
            if not s:
                continue
            s = "ready" if s == "waiting" else s
            if s not in STATUSES:
                raise InterpError(f"--status {part.strip()!r}: one of {', '.join(STATUSES)}")
            if s not in out:
                out.append(s)
    return tuple(out)


def parse_subjects(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """--subject values, each one id or several comma-separated. A --subject that
    names no id ('' from an empty shell variable) is refused: it would otherwise
    leave the selection empty, which for retry means every dead letter."""
    out: list[str] = []
    for value in values:
        ids = [s.strip() for s in value.split(",") if s.strip()]
        if not ids:
            raise InterpError(f"--subject {value!r} names no subject")
        out += ids
    return tuple(out)


def given_text(option: str, value: str | None) -> str | None:
    """An option's text as given, None when not given; an empty one is refused (an
    empty --where or --error-like would select nothing less than everything)."""
    if value is None:
        return None
    if not value.strip():
        raise InterpError(f"{option} is empty: give it a value, or leave it out")
    return value


def error_pattern(text: str) -> str:
    """--error-like: an ILIKE pattern; without a % it matches anywhere in the error."""
    return text if "%" in text else f"%{text}%"


def act(db: Database, verb: str, workflow_id: int, selection: Selection, *,
        reason: str | None, to_step: int | None = None, dry_run: bool = False,
        sample: int = SAMPLE, where_timeout_s: float = WHERE_TIMEOUT_S) -> dict[str, Any]:
    """Runs one operator verb over a selection; returns what it found and did.

    With dry_run, changes nothing and records nothing: the counts are what the
    verb would find now. Raises InterpError (one line) for a bad selection,
    before anything changes."""
    v = VERBS.get(verb)
    if v is None:
        raise InterpError(f"no verb {verb!r}: one of {', '.join(VERBS)}")
    reason = (reason or "").strip()
    if not dry_run and not reason:
        raise InterpError(f"{verb} needs --reason TEXT: it is recorded with the action")
    if verb == "rewind" and to_step is None:
        raise InterpError("rewind needs --to-step STEP")
    if v.needs_selection and selection.is_empty() and not selection.everything:
        raise InterpError(f"{verb} needs a selection (--subject, --step, --outcome-at, "
                          "--error-like, --status, --where) or --all")
    if where_timeout_s <= 0:
        raise InterpError("--where-timeout must be positive")
    eligible = _eligible(v, selection.statuses)
    wf = db.run(lambda c: _workflow(c, workflow_id))
    key_type = db.run(lambda c: _key_type(c, wf))
    db.run(lambda c: _check_steps(c, workflow_id, selection, to_step))
    ids = db.run(lambda c: _canonical_ids(c, workflow_id, key_type, selection.subjects))
    if selection.where:
        found = _where_ids(db, wf, selection.where, where_timeout_s)
        accepted = set(found)
        ids = found if ids is None else [i for i in ids if i in accepted]
    params: dict[str, Any] = {
        "workflow_id": workflow_id, "ids": ids, "step": selection.step,
        "statuses": list(selection.statuses) or None,
        "error_like": error_pattern(selection.error_like) if selection.error_like else None,
        "outcome_step": selection.outcome_at[0] if selection.outcome_at else None,
        "outcome": selection.outcome_at[1] if selection.outcome_at else None,
        "eligible": list(eligible), "sample": sample,
    }
    result: dict[str, Any] = {"verb": verb, "workflow": workflow_id, "dry_run": dry_run,
                              "selection": selection.as_json(), "eligible": list(eligible),
                              "to_step": to_step}
    if dry_run:
        row = db.run(lambda c: one(c.execute(Q["operator_dry_run"], params)))
        result.update({"action_id": None, "reason": reason or None,
                       "selected": row["selected"], "matched": row["matched"],
                       "skipped": row["skipped"], "changed": 0,
                       "would_change": row["matched"] - row["skipped"],
                       "ineligible": row["ineligible"], "by_status": row["by_status"],
                       "sample": list(row["sample"])})
        return result
    params.update({"verb": verb, "to_step": to_step, "reason": reason,
                   "selection": Jsonb(selection.as_json()), "os_user": _os_user(),
                   "client_host": socket.gethostname()})
    statement = {"retry": Q["operator_retry"], "rewind": Q["operator_rewind"],
                 "cancel": Q["operator_cancel"]}[verb]
    # Not retried on a lost connection: had the commit gone through unseen, a second
    # try would act again. The error says so; interp.operator_actions tells.
    try:
        row = db.run(lambda c: one(c.execute(statement, params)), retry=False)
    except DatabaseUnreachable as exc:
        cause = exc.__cause__
        if cause is not None and not is_connection_problem(cause):
            # The server answered with an error (a lock or statement timeout, a
            # deadlock): it rolled the statement back, record and all.
            raise InterpError(f"{verb} failed, nothing changed: {first_line(cause)}") from exc
        raise DatabaseUnreachable(
            f"the connection was lost during the {verb}; whether it committed, "
            f"interp.operator_actions says ({exc})") from exc
    row = json_row(row)
    result.update({"action_id": row["action_id"], "at": row["at"], "reason": reason,
                   "db_role": row["db_role"], "db_user": row["db_user"], "os_user": _os_user(),
                   "selected": row["selected"], "matched": row["matched"],
                   "skipped": row["skipped"], "changed": row["changed"],
                   "sample": list(row["sample"])})
    return result


def actions_of_subject(conn: psycopg.Connection[Any], workflow_id: int,
                       subject_id: str) -> list[dict[str, Any]]:
    """The operator actions that moved one subject, oldest first."""
    return [json_row(r) for r in conn.execute(Q["operator_actions_of_subject"], {
        "workflow_id": workflow_id, "subject_id": subject_id})]


def recent_actions(conn: psycopg.Connection[Any], workflow_id: int,
                   limit: int = 20) -> list[dict[str, Any]]:
    """A workflow's latest operator actions, newest first."""
    return [json_row(r) for r in conn.execute(Q["operator_recent_actions"], {
        "workflow_id": workflow_id, "limit": limit})]


def cancelled_by_step(conn: psycopg.Connection[Any], workflow_id: int) -> dict[int, int]:
    """Cancelled subjects per step (read from the subject_counts rollup)."""
    return {r["step"]: int(r["n"]) for r in conn.execute(
        Q["operator_cancelled_by_step"], {"workflow_id": workflow_id})}


def describe(result: dict[str, Any]) -> str:
    """One line that says what an action did (or, dry, would do)."""
    verb, wf = result["verb"], result["workflow"]
    where = f" to step {result['to_step']}" if result.get("to_step") is not None else ""
    skipped = (f", {result['skipped']} skipped (held by a running wave)"
               if result["skipped"] else "")
    if result["dry_run"]:
        head = (f"{verb}{where} would move {result['would_change']} of "
                f"{result['matched']} matching subject(s) in workflow {wf}{skipped}")
        if result["ineligible"]:
            head += (f"; {result['ineligible']} selected subject(s) are in a status "
                     f"{verb} does not move ({', '.join(result['eligible'])} only)")
    else:
        head = (f"{verb}{where}: moved {result['changed']} of {result['matched']} matching "
                f"subject(s) in workflow {wf}{skipped} (action {result['action_id']})")
    sample = result.get("sample") or []
    if sample:
        more = " ..." if len(sample) < (result["would_change"] if result["dry_run"]
                                        else result["changed"]) else ""
        head += "\n  subjects: " + ", ".join(sample) + more
    return head


# ---------------------------------------------------------------- checks

def _eligible(v: Verb, statuses: tuple[str, ...]) -> tuple[str, ...]:
    if not statuses:
        return v.default
    wrong = [s for s in statuses if s not in v.eligible]
    if wrong:
        raise InterpError(f"{v.name} moves subjects that are {' or '.join(v.eligible)}; "
                          f"--status {', '.join(wrong)} selects none it can move")
    return statuses


def _workflow(conn: psycopg.Connection[Any], workflow_id: int) -> dict[str, Any]:
    row = conn.execute(Q["monitor_workflow"], {"workflow_id": workflow_id}).fetchone()
    if row is None:
        raise NotFound(f"no workflow {workflow_id} (see: interp workflow list)")
    return dict(row)


def _key_type(conn: psycopg.Connection[Any], wf: dict[str, Any]) -> str:
    row = conn.execute(Q["operator_key_type"], {"table": wf["subject_table"],
                                       "key": wf["subject_key"]}).fetchone()
    if not row or not row["key_type"]:
        raise InterpError(f"workflow {wf['workflow_id']}: subject table {wf['subject_table']} "
                          f"has no column {wf['subject_key']}")
    return str(row["key_type"])


def _check_steps(conn: psycopg.Connection[Any], workflow_id: int, selection: Selection,
                 to_step: int | None) -> None:
    def known(step: int) -> dict[str, Any]:
        return one(conn.execute(Q["operator_step_known"],
                                {"workflow_id": workflow_id, "step": step}))

    if to_step is not None and not known(to_step)["defined"]:
        raise InterpError(f"--to-step {to_step}: workflow {workflow_id} has no step {to_step}")
    if selection.step is not None:
        k = known(selection.step)
        if not (k["defined"] or k["occupied"]):
            raise InterpError(f"--step {selection.step}: workflow {workflow_id} has no step "
                              f"{selection.step}")
    if selection.outcome_at is not None and not known(selection.outcome_at[0])["defined"]:
        raise InterpError(f"--outcome-at: workflow {workflow_id} has no step "
                          f"{selection.outcome_at[0]}")


def _canonical_ids(conn: psycopg.Connection[Any], workflow_id: int, key_type: str,
                   given: tuple[str, ...]) -> list[str] | None:
    """The --subject ids as stored, or None when none were given. Refuses an id that is
    no value of the key's type, or names no subject of the workflow."""
    if not given:
        return None
    query = sql.SQL(Q["operator_canonical_ids"]).format(  # type: ignore[arg-type]
        key_type=sql.SQL(key_type))  # type: ignore[arg-type]
    try:
        with conn.transaction():
            rows = conn.execute(query, {"ids": list(given)}).fetchall()
    except psycopg.errors.DataError as exc:
        raise InterpError(f"--subject: {first_line(exc)} (the subject key is {key_type})") \
            from exc
    ids = list(dict.fromkeys(r["subject_id"] for r in rows))
    missing = [r["subject_id"] for r in conn.execute(Q["operator_missing_subjects"], {
        "workflow_id": workflow_id, "ids": ids})]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise NotFound(f"no subject {shown} in workflow {workflow_id} "
                       f"({len(missing)} of the {len(ids)} given)")
    return ids


def _where_ids(db: Database, wf: dict[str, Any], where: str, timeout_s: float) -> list[str]:
    """The subjects whose row the operator's predicate accepts: on a connection of its
    own (closed afterwards, so nothing it sets outlives it), in a READ ONLY
    transaction, bounded by a statement timeout. Any failure is one line."""
    table = sql.Identifier(*wf["subject_table"].split("."))
    key = sql.Identifier(wf["subject_key"])
    query = sql.SQL(Q["operator_where_ids"]).format(  # type: ignore[arg-type]
        subject_table=table, subject_key=key,
        # The predicate is the operator's own SQL; a literal % in it is not a placeholder.
        where=sql.SQL(where.replace("%", "%%")))  # type: ignore[arg-type]
    try:
        with psycopg.connect(db.dsn, connect_timeout=10, autocommit=False,
                             application_name="interp operator --where") as conn:
            conn.read_only = True
            try:
                conn.execute(Q["operator_where_timeout"],
                             {"ms": str(max(1, round(timeout_s * 1000)))})
                rows = conn.execute(query, {"workflow_id": wf["workflow_id"]}).fetchall()
            finally:
                conn.rollback()
    except psycopg.errors.QueryCanceled as exc:
        raise InterpError(f"--where ran longer than {timeout_s:g}s; nothing changed") from exc
    except psycopg.Error as exc:
        raise InterpError(f"--where failed, nothing changed: {first_line(exc)}") from exc
    return [r[0] for r in rows]


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return None
