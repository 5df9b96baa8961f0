"""Numbered SQL migrations, each in its own transaction, under an advisory lock.

The migrations are package data (``interpreter/schema``, the repository's
``schema/`` folder), read with importlib.resources: the same files in a wheel,
an editable install and a checkout.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import psycopg

from .errors import InterpError
from .queries import Q

# Any fixed 64-bit number works; it only has to be the same for every migrator.
MIGRATION_LOCK_KEY = 0x696E7465727001
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Traversable

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def packaged_schema() -> Traversable:
    """The folder of migrations inside the installed package."""
    return resources.files(__package__) / "schema"


def known_migrations(directory: Traversable | None = None) -> list[Migration]:
    folder = packaged_schema() if directory is None else directory
    if not folder.is_dir():
        raise InterpError(f"no migrations folder at {folder}; the interp install is incomplete")
    found = []
    for path in sorted((f for f in folder.iterdir() if f.name.endswith(".sql")),
                       key=lambda f: f.name):
        m = _FILE.match(path.name)
        if not m:
            raise InterpError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    if not found:
        # Never report "nothing to migrate" for an install that lost its migrations.
        raise InterpError(f"no migrations found in {folder}; the interp install is incomplete")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise InterpError("two migrations share a number in schema/")
    return found


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    exists = conn.execute(Q["migration_table"]).fetchone()
    if not exists or exists["t"] is None:
        return {}
    return {r["version"]: r for r in conn.execute(Q["migrations_applied"])}


def migration_status(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    applied = applied_migrations(conn)
    known = {m.version: m for m in known_migrations()}
    rows = []
    for version in sorted(set(applied) | set(known)):
        if version in applied and version in known:
            state = "applied"
        elif version in applied:
            state = "unknown to this code"
        else:
            state = "pending"
        name = known[version].name if version in known else applied[version]["name"]
        applied_at = applied[version]["applied_at"] if version in applied else None
        rows.append({"version": version, "name": name, "state": state, "applied_at": applied_at})
    return rows


def migrate(dsn: str) -> list[Migration]:
    """Apply pending migrations; returns what was applied. Safe to run concurrently."""
    applied_now: list[Migration] = []
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        # Nothing pending: say so without taking the lock or running any DDL, so a
        # least-privilege worker (`interp db roles`) can start `interp run`.
        known_versions = {m.version for m in known_migrations()}
        applied_before = applied_migrations(conn)
        unknown_before = sorted(set(applied_before) - known_versions)
        if unknown_before:
            raise InterpError(
                f"the database has migration(s) {unknown_before} that this code does not know; "
                "upgrade interp before migrating")
        if applied_before and known_versions <= set(applied_before):
            return []
        # A session-level lock, so it spans the per-migration transactions.
        conn.execute(Q["migration_lock"], {"key": MIGRATION_LOCK_KEY})
        try:
            with conn.transaction():
                conn.execute(Q["migration_bookkeeping"])
            applied = applied_migrations(conn)
            known = known_migrations()
            unknown = sorted(set(applied) - {m.version for m in known})
            if unknown:
                raise InterpError(
                    f"the database has migration(s) {unknown} that this code does not know; "
                    "upgrade interp before migrating")
            for m in known:
                if m.version in applied:
                    continue
                with conn.transaction():
                    conn.execute(m.path.read_text(encoding="utf-8"))
                    conn.execute(Q["migration_record"], {"version": m.version, "name": m.name,
                                                         "checksum": m.checksum})
                applied_now.append(m)
        finally:
            conn.execute(Q["migration_unlock"], {"key": MIGRATION_LOCK_KEY})
    return applied_now
