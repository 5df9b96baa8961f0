"""Helpers the benchmarks share: scratch databases on an admin DSN, logging, the
small extraction job the model benchmarks ask for, and reading a kept run's
prompts and models.

Benchmarks run as scripts (`python bench/bench_x.py`), so this module is
imported by its plain name from the bench/ folder.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The model benchmarks' extraction job: a title, remote or not, and a seniority,
# as JSON that an output schema constrains.
EXTRACT_SCHEMA = {"type": "object",
                  "properties": {"title": {"type": "string", "maxLength": 60},
                                 "remote": {"type": "boolean"},
                                 "seniority": {"type": "string",
                                               "enum": ["junior", "mid", "senior"]}},
                  "required": ["title", "remote", "seniority"], "additionalProperties": False}
JOB_ROLES = ["Python developer", "nurse", "data engineer", "truck driver", "accountant",
             "frontend developer", "electrician", "teacher"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and credentials as dsn, another database."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def admin_exec(admin_dsn: str, statement: sql.Composable | str) -> None:
    """CREATE/DROP DATABASE and the like, which cannot run in a transaction."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def stored_messages(body: str) -> list[dict[str, str]]:
    """A prompt a run stored (interp.prompts.body, the JSON pair [system, user]) as the
    chat messages the model was asked."""
    system, user = json.loads(body)
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}]


def kept_run_models(conn: psycopg.Connection[Any], work: list[dict[str, Any]]) -> dict[str, Any]:
    """The model rows (as `ModelDef`s, by name) that a kept run's model checkpoints
    name: `work` holds one dict per checkpoint with its "model"."""
    from interpreter.definitions import ModelDef  # the caller has put the repository on sys.path

    names = sorted({w["model"] for w in work})
    rows = conn.execute("SELECT * FROM interp.models WHERE name = ANY(%s)", (names,))
    return {r["name"]: ModelDef.from_row(r) for r in rows}
