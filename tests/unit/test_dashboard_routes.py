"""A new dashboard view is one entry in the route table, `ops.dashboard.ROUTES`:
the handler serves it (and its errors) with no change of its own."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from interpreter.errors import NotFound
from interpreter.ops import dashboard
from interpreter.ops.dashboard import ApiRequest, serve_in_thread


class FakeDb:
    """Hands each read a fake connection: what a view reads through `db.run`."""

    def run(self, fn: Any, retry: bool = True) -> Any:
        return fn({"answer": 42})


def answer_view(req: ApiRequest) -> dict[str, Any]:
    wf = req.workflow()
    if wf == 404:
        raise NotFound("no such workflow")
    return {"workflow": wf, "answer": req.db.run(lambda conn: conn["answer"]),
            "scale": float(req.arg("scale", "1"))}


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setitem(dashboard.ROUTES, "/api/answer", answer_view)
    srv, _thread = serve_in_thread(FakeDb(), port=0, workflow_id=7)  # type: ignore[arg-type]
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_a_route_table_entry_is_all_a_new_view_takes(server):
    assert get(server, "/api/answer?scale=2") == (200, {"workflow": 7, "answer": 42,
                                                        "scale": 2.0})
    assert get(server, "/api/answer?workflow=3") == (200, {"workflow": 3, "answer": 42,
                                                           "scale": 1.0})


def test_the_handler_maps_a_views_errors(server):
    assert get(server, "/api/answer?workflow=404") == (404, {"error": "no such workflow"})
    assert get(server, "/api/answer?workflow=x")[0] == 400
    assert get(server, "/api/not-a-view") == (404, {"error": "not found"})
