"""Small reads and writes behind the administrative commands.

Each takes an open connection (``Database.run`` hands one over), so the
command line stays free of SQL; the statements are in ``sql/admin.sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from .errors import NotFound
from .queries import Q


def server_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The server's version string, the database and the user interp is connected as."""
    return conn.execute(Q["admin_server_info"]).fetchone()  # type: ignore[return-value]


def set_paused(conn: psycopg.Connection[Any], workflow_id: int, paused: bool) -> None:
    """Pause or resume a workflow; running workers see it before their next claim."""
    n = conn.execute(Q["admin_set_workflow_paused"],
                     {"paused": paused, "workflow_id": workflow_id}).rowcount
    if not n:
        raise NotFound(f"workflow {workflow_id} does not exist")


def read_models(conn: psycopg.Connection[Any], names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of interp.models, all of them or the ones named, by name."""
    if names:
        cur = conn.execute(Q["admin_models_named"], {"names": list(names)})
    else:
        cur = conn.execute(Q["admin_models"])
    return cur.fetchall()  # type: ignore[return-value]


def record_model_file(conn: psycopg.Connection[Any], name: str, sha256: str,
                      size_bytes: int | None) -> None:
    """Store a model file's digest and size where the row has none yet (later loads then
    refuse a file whose digest differs)."""
    conn.execute(Q["record_model_file"],
                 {"name": name, "sha256": sha256, "size_bytes": size_bytes})
