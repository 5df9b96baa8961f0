"""`interp dashboard`: a live page over the ops views, on the standard library's HTTP server.

The page (interpreter/static/) polls the JSON API every 2 s and builds its DOM
with textContent only, so text from the database (step names, errors, model
names) can never become markup. The API returns the same dict as
`interp status --json`. `/metrics` serves the Prometheus metrics of every
workflow in the database (interpreter/ops/metrics.py).

The JSON API is the route table :data:`ROUTES`: a path and a function of one
:class:`ApiRequest` that returns what to send. A new view is one entry there
(and its module and query); the handler needs no change.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..db import Database
from ..errors import InterpError, InvalidValue, NotFound, listen_error
from ..queries import Q
from .metrics import metrics_registry
from .status import list_workflows, overview_series, status_data, velocity_series, workflow_row
from .timeline import lane_time, timeline_data

STATIC = Path(__file__).parents[1] / "static"
log = logging.getLogger(__name__)

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
# The page needs nothing from anywhere else; say so to the browser.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class ApiRequest:
    """One request to the JSON API: the database, the query string, and the
    workflow the page opens on when the request names none."""

    db: Database
    query: dict[str, list[str]]
    default_workflow: int | None = None

    def arg(self, name: str, default: str) -> str:
        return (self.query.get(name) or [default])[0]

    def workflow(self) -> int:
        values = self.query.get("workflow")
        if not values:
            # as /api/workflows's "default": --workflow, else the latest activity
            default = self.default_or_latest()
            if default is not None:
                return int(default)
            raise InvalidValue("workflow=ID is required")
        return int(values[0])

    def default_or_latest(self) -> int | None:
        return (self.default_workflow if self.default_workflow is not None
                else self.db.run(latest_workflow))


def api_workflows(req: ApiRequest) -> dict[str, Any]:
    return {"default": req.default_or_latest(), "workflows": req.db.run(list_workflows)}


def api_status(req: ApiRequest) -> dict[str, Any]:
    wf = req.workflow()
    stall = float(req.arg("stall_window", "600"))
    return req.db.run(lambda conn: status_data(conn, wf, stall))


def api_velocity(req: ApiRequest) -> dict[str, Any]:
    wf = req.workflow()
    minutes = int(req.arg("minutes", "60"))
    return req.db.run(lambda conn: velocity_series(conn, wf, minutes))


def api_overview(req: ApiRequest) -> dict[str, Any]:
    wf = req.workflow()
    minutes = int(req.arg("minutes", "60"))
    return req.db.run(lambda conn: overview_series(conn, wf, minutes))


def api_timeline(req: ApiRequest) -> dict[str, Any]:
    """The timeline of the last `since` seconds (or since=fit), with the lane-time share that
    `interp status` shows (over its own window, so the page and status agree)."""
    wf = req.workflow()
    since = req.arg("since", "3600")
    # since=fit: the runs of the last day, the window fitted to what was recorded.
    fit = since == "fit"
    seconds = 86400.0 if fit else float(since)

    def read(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        return {**timeline_data(conn, wf, seconds, fit=fit), "lane_time": lane_time(conn, wf)}

    return req.db.run(read)


#: The JSON API: path -> the view that answers it (200 and its JSON; NotFound: 404;
#: ValueError or InterpError: 400).
ROUTES: dict[str, Callable[[ApiRequest], Any]] = {
    "/api/workflows": api_workflows,
    "/api/status": api_status,
    "/api/velocity": api_velocity,
    "/api/overview": api_overview,
    "/api/timeline": api_timeline,
}


class DashboardHandler(BaseHTTPRequestHandler):
    """The page, its static files and the JSON API over one database.

    `make_handler` makes a subclass bound to a database and a default workflow,
    because the standard library's server builds a handler per request from a class.
    """

    server_version = "interp-dashboard"
    db: Database | None = None
    default_workflow: int | None = None
    metrics: Any = None  # a prometheus_client registry over `db`

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s " + fmt, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlparse(self.path)
        try:
            self._route(url.path, parse_qs(url.query))
        except NotFound as exc:
            self._json(404, {"error": str(exc)})
        except (ValueError, InterpError) as exc:
            self._json(400, {"error": str(exc)})
        except Exception as exc:  # keep serving; say what broke
            log.exception("dashboard request failed")
            self._json(500, {"error": f"{exc.__class__.__name__}: {exc}".splitlines()[0]})

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path in ("/", "/index.html"):
            self._static("dashboard.html")
        elif path.startswith("/static/"):
            self._static(path[len("/static/"):])
        elif path == "/metrics":
            self._send(200, generate_latest(self.metrics), CONTENT_TYPE_LATEST)
        elif path in ROUTES:
            assert self.db is not None
            self._json(200, ROUTES[path](ApiRequest(self.db, query, self.default_workflow)))
        else:
            self._json(404, {"error": "not found"})

    def _static(self, name: str) -> None:
        path = (STATIC / name).resolve()
        if STATIC.resolve() not in path.parents or not path.is_file():
            self._json(404, {"error": "not found"})
            return
        self._send(200, path.read_bytes(), _TYPES.get(path.suffix, "application/octet-stream"))

    def _json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(data, default=str).encode(), "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        self.wfile.write(body)


def latest_workflow(conn: psycopg.Connection[Any]) -> int | None:
    """The workflow the page opens on when `--workflow` names none: the one with the
    latest activity (checkpoint or run), else the first; None without workflows."""
    row = conn.execute(Q["dashboard_latest_workflow"]).fetchone()
    return int(row["workflow_id"]) if row else None


def make_handler(db: Database, default_workflow: int | None) -> type[BaseHTTPRequestHandler]:
    """A handler class that serves `db`, with `default_workflow` when a request names none."""
    return type("Handler", (DashboardHandler,), {"db": db, "default_workflow": default_workflow,
                                                 "metrics": metrics_registry(db)})


def make_server(db: Database, host: str = "127.0.0.1", port: int = 8765,
                workflow_id: int | None = None) -> ThreadingHTTPServer:
    try:
        server = ThreadingHTTPServer((host, port), make_handler(db, workflow_id))
    except OSError as exc:
        raise listen_error(exc, host, port, flag="--port", doing="listen") from None
    server.daemon_threads = True
    return server


def serve(db: Database, host: str = "127.0.0.1", port: int = 8765, workflow_id: int | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    if workflow_id is not None:
        db.run(lambda conn: workflow_row(conn, workflow_id))
    server = make_server(db, host, port, workflow_id)
    h, p = str(server.server_address[0]), server.server_address[1]
    url = f"http://{h}:{p}/" + (f"?workflow={workflow_id}" if workflow_id is not None else "")
    if announce:
        announce(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve_in_thread(db: Database, host: str = "127.0.0.1", port: int = 0,
                    workflow_id: int | None = None) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """For tests and embedding: a server on a background thread (port 0 = any free)."""
    server = make_server(db, host, port, workflow_id)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
