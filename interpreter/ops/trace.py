"""`interp trace`: every checkpoint of one subject, in order, where it stands
now, the operator actions on it and, on request, its rendered prompts."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from tabulate import tabulate

from ..db import json_row
from ..errors import NotFound
from ..operator_actions import actions_of_subject
from ..queries import Q
from .status import workflow_row


def trace_data(conn: psycopg.Connection[Any], workflow_id: int, subject_id: str,
               prompts: bool = False) -> dict[str, Any]:
    """Every checkpoint of one subject, in order, and where it stands now. With
    prompts, also the rendered prompt of each model checkpoint, by sha256."""
    workflow_row(conn, workflow_id)
    subject = {"workflow_id": workflow_id, "subject_id": subject_id}
    state = conn.execute(Q["trace_subject_state"], subject).fetchone()
    rows = conn.execute(Q["trace_checkpoints"], subject).fetchall()
    if state is None and not rows:
        raise NotFound(f"no subject {subject_id!r} in workflow {workflow_id}")
    data = {"workflow": workflow_id, "subject": subject_id,
            "state": json_row(state) if state else None,
            "checkpoints": [json_row(r) for r in rows],
            "operator_actions": actions_of_subject(conn, workflow_id, subject_id)}
    if prompts:
        data["prompts"] = prompt_texts(conn, workflow_id, subject_id)
    return data


def prompt_texts(conn: psycopg.Connection[Any], workflow_id: int,
                 subject_id: str) -> dict[str, dict[str, str | None]]:
    """The rendered prompts of a subject's model checkpoints: sha256 -> system, user.
    A prompt pruned with its checkpoints is absent."""
    out: dict[str, dict[str, str | None]] = {}
    for r in conn.execute(Q["trace_prompts"], {"workflow_id": workflow_id,
                                                "subject_id": subject_id}):
        system, user = json.loads(r["body"])
        out[r["sha256"]] = {"system": system, "user": user}
    return out



def render_trace(data: dict[str, Any]) -> str:
    st = data["state"]
    lines = [f"Workflow {data['workflow']} · subject {data['subject']}"]
    if st:
        where = (f"at step {st['step']} ({st['step_name']})" if st["step"] is not None
                 else "ended")
        lines.append(f"now {st['status']} {where} · attempts {st['attempts']}"
                     + (f" · last error: {st['last_error']}" if st["last_error"] else ""))
        lines.append(f"admitted {st['admitted_at']} by entry point {st['entry_point']}"
                     + (f" in run {st['admitted_by_run']}" if st.get("admitted_by_run") else ""))
    rows = []
    for c in data["checkpoints"]:
        model = ""
        if c["model"]:
            model = (f"{c['model']} seed={c['seed']} tokens={c['prompt_tokens']}/"
                     f"{c['completion_tokens']} gen={c['gen_ms']}ms"
                     + (f" batch={c['batch_width']}" if c.get("batch_width") else "")
                     # prompt tokens whose KV was reused, not decoded (NULL: unknown)
                     + (f" reused={c['prompt_tokens_reused']}"
                        if c.get("prompt_tokens_reused") is not None else "")
                     + (f" forced={c['forced_tokens']}" if c.get("forced_tokens") else ""))
        rows.append([c["finished_at"], c["step"], c["step_name"], c["visit"], c["attempt"],
                     c["outcome"], c["duration_ms"], (c["error"] or "")[:80], model])
    lines.append(tabulate(rows, headers=["finished", "step", "name", "visit", "attempt",
                                         "outcome", "ms", "error", "model"],
                          tablefmt="presto", disable_numparse=True))
    for a in data.get("operator_actions") or []:
        def at(step: Any) -> str:
            return "ended" if step is None else f"at step {step}"

        lines.append(f"{a['at']} operator {a['verb']} (action {a['action_id']}, "
                     f"{a['db_user']}/{a['os_user']}): {a['from_status']} {at(a['from_step'])} "
                     f"-> {a['to_status']} {at(a['to_step'])}; reason: {a['reason']}")
    lines += _render_prompts(data)
    return "\n".join(lines)


def _render_prompts(data: dict[str, Any]) -> list[str]:
    """Each model checkpoint's prompt, under the step and visit it was asked at."""
    if "prompts" not in data:
        return []
    lines: list[str] = []
    for c in data["checkpoints"]:
        sha = c.get("prompt_sha256")
        if not sha:
            continue
        lines.append(f"--- prompt of step {c['step']} visit {c['visit']} attempt "
                     f"{c['attempt']} (sha256 {sha[:12]})")
        prompt = data["prompts"].get(sha)
        if prompt is None:
            lines.append("(pruned)")
            continue
        if prompt["system"]:
            lines.append(f"[system]\n{prompt['system']}")
        lines.append(f"[user]\n{prompt['user']}")
    return lines

