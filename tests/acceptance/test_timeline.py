"""The timeline from real runs with the real SmolLM2: the model lane's intervals
cover the run's wall time, and a forced model switch and a forced breaker
opening show in `interp status --json`, in `interp timeline` and on the
dashboard page (headless Chromium), which the test photographs for docs/ops.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from interpreter.engine import Runner, RunOptions
from interpreter.ops.figures import percent
from interpreter.ops.timeline import CAUSE_LABELS
from tests.acceptance.test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    wait_for_http,
)
from tests.helpers import REPO_ROOT, add_items, make_workflow, stop_process
from tests.integration.test_model_workflow import SCHEMA, model_rows

# The picture in docs/ops.md. `make test` leaves the checkout as it found it: the
# test writes its screenshot under tmp_path, and over this file only when asked
# (INTERP_SCREENSHOT=docs).
SCREENSHOT = REPO_ROOT / "docs" / "ops-timeline.png"


def playwright():
    """Playwright's sync API, driving the system Chromium (skips when either is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_playwright


def run_intervals(conn, run_id: int) -> list[dict]:
    return conn.execute("SELECT * FROM interp.lane_intervals WHERE run_id = %s "
                        "ORDER BY started_at, id", (run_id,)).fetchall()


def gaps_and_overlaps(intervals: list[dict]) -> float:
    """Seconds of gap or overlap between consecutive intervals."""
    return sum(abs((b["started_at"] - a["ended_at"]).total_seconds())
               for a, b in zip(intervals, intervals[1:], strict=False))


@pytest.mark.model
def test_lane_intervals_cover_the_run_wall_time(db, conn, smollm2):
    add_items(conn, 10, title="Senior data engineer {i}")
    model_rows(conn, smollm2, ["m_a"])
    make_workflow(conn, 60, steps=[
        {"number": 1, "actor": "actor_m_a", "template": "label", "output_schema": SCHEMA},
        {"number": 2, "actor": "actor_m_a", "template": "label", "output_schema": SCHEMA}],
        transitions=[(1, "*", 2), (2, "*", None)])
    summary = Runner(db, 60, RunOptions(until_idle=True, poll_s=0.05,
                                        model_batch_size=4)).run()
    run = conn.execute("SELECT started_at, finished_at FROM interp.runs WHERE run_id = %s",
                       (summary.run_id,)).fetchone()
    wall = (run["finished_at"] - run["started_at"]).total_seconds()
    intervals = run_intervals(conn, summary.run_id)
    assert intervals, "no lane intervals recorded"
    assert {i["lane"] for i in intervals} == {"model"}
    covered = sum((i["ended_at"] - i["started_at"]).total_seconds() for i in intervals)
    # No gap or overlap beyond 1% of the run's wall time, and together they span it.
    assert gaps_and_overlaps(intervals) <= 0.01 * wall
    assert covered == pytest.approx(wall, rel=0.01)
    assert abs((intervals[0]["started_at"] - run["started_at"]).total_seconds()) <= 0.01 * wall
    assert abs((intervals[-1]["ended_at"] - run["finished_at"]).total_seconds()) <= 0.01 * wall
    generating = [i for i in intervals if i["cause"] == "generating"]
    # Every subject went through both steps, each in one generating interval.
    assert sum(i["subjects"] for i in generating) == 20
    assert {i["step"] for i in generating} == {1, 2} and {i["model"] for i in generating} == {"m_a"}
    assert [i["cause"] for i in intervals].count("loading") == 1   # the one load, cut out
    samples = conn.execute("SELECT * FROM interp.utilisation WHERE run_id = %s",
                           (summary.run_id,)).fetchall()
    assert len(samples) >= max(1, int(wall) - 2)    # about one a second
    assert all(0 <= s["cpu_pct"] <= 100 for s in samples)


def switch_and_breaker_run(db, conn, smollm2, tmp_path: Path) -> int:
    """A run that switches from m_a to m_b and then meets a model whose file is
    corrupt: its breaker opens and holds the lane back until the run is stopped."""
    add_items(conn, 6, title="Senior data engineer {i}")
    model_rows(conn, smollm2, ["m_a", "m_b"])
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    conn.execute("INSERT INTO interp.models (name, source) VALUES ('broken', %s)", (str(bad),))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('actor_broken', 'model', 'broken', "
                 "'{\"breaker_threshold\": 3, \"breaker_cooldown_s\": 3600}')")
    steps = [{"number": 1, "actor": "actor_m_a", "template": "label", "output_schema": SCHEMA},
             {"number": 2, "actor": "actor_m_b", "template": "label", "output_schema": SCHEMA},
             {"number": 3, "actor": "actor_broken", "template": "label", "max_attempts": 9,
              "params": {"retry_base_s": 0.2, "retry_max_s": 0.2}}]
    make_workflow(conn, 61, steps=steps, transitions=[(1, "*", 2), (2, "*", 3), (3, "*", None)])
    stop = threading.Event()
    runner = Runner(db, 61, RunOptions(poll_s=0.05, model_batch_size=8), stop=stop)
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 300
    held_since = None
    while time.monotonic() < deadline:
        row = conn.execute("SELECT state FROM interp.actor_health WHERE actor = 'actor_broken'"
                           ).fetchone()
        if row and row["state"] == "open":
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since > 6:   # long enough to see it on the page
                break
        time.sleep(0.2)
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    assert held_since is not None, "the breaker never opened"
    return int(runner.run_id or 0)


@pytest.mark.model
@pytest.mark.browser
def test_switch_and_breaker_show_in_status_timeline_and_the_page(db, conn, cli, smollm2,
                                                                 tmp_path):
    run_id = switch_and_breaker_run(db, conn, smollm2, tmp_path)
    intervals = run_intervals(conn, run_id)
    causes = [i["cause"] for i in intervals]
    assert "switching" in causes and "breaker" in causes, causes
    assert [i["model"] for i in intervals if i["cause"] == "switching"][0] == "m_b"
    assert gaps_and_overlaps(intervals) <= 0.05

    status = json.loads(cli("status", "--workflow", "61", "--json").stdout)
    lane = status["lane_time"]
    assert lane["share"]["switching"] > 0 and lane["share"]["breaker"] > 0
    assert lane["share"]["generating"] > 0
    assert sum(lane["share"].values()) == pytest.approx(1, abs=0.001)
    assert lane["gpu_util_mean"] is None   # no GPU here
    text = cli("status", "--workflow", "61").stdout
    assert "% switching" in text and "% breaker" in text and "\nlane " in text
    # The status line reads each share by the rule the page uses (interpreter/ops/figures.py).
    for cause, value in lane["share"].items():
        if value >= 0.005:
            assert f"{percent(value)}% {CAUSE_LABELS[cause]}" in text

    table = cli("timeline", "--workflow", "61", "--since", "1h").stdout
    assert "switching" in table and "breaker" in table
    assert "switched model m_a → m_b" in table and "breaker opened for actor actor_broken" in table
    data = json.loads(cli("timeline", "--workflow", "61", "--since", "1h", "--json").stdout)
    kinds = {m["kind"] for m in data["markers"]}
    assert {"switch", "breaker_open", "load", "load_failed"} <= kinds
    assert data["samples"] and len(data["intervals"]) == len(intervals)

    page_shows_the_timeline(cli, lane, data, tmp_path / "ops-timeline.png")


def page_shows_the_timeline(cli, lane: dict, data: dict, shot: Path) -> None:
    sync_playwright = playwright()
    port = free_port()
    proc = cli.popen("dashboard", "--port", str(port), "--workflow", "61",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url + "api/workflows", proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                        headless=True)
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url + "?workflow=61")
                # The run is short: the window fitted to it shows it best.
                page.select_option("#timeline-since", "fit")
                page.wait_for_selector("#timeline rect[data-cause='breaker']", timeout=20000)
                shares = page.eval_on_selector_all(
                    "#lane-time .lane-cause",
                    "spans => spans.map(s => [s.dataset.cause, Number(s.dataset.share), "
                    "s.textContent])")
                want = {c: v for c, v in lane["share"].items() if v >= 0.005}
                assert {c: v for c, v, _ in shares} == want
                for cause, value, label in shares:
                    assert label == f"{percent(value)}% {CAUSE_LABELS[cause]}"
                bands = page.eval_on_selector_all(
                    "#timeline rect", "rs => rs.map(r => r.dataset.cause)")
                assert len(bands) == len(data["intervals"])
                assert {"generating", "switching", "breaker"} <= set(bands)
                kinds = page.eval_on_selector_all(
                    "#timeline g.marker", "gs => gs.map(g => g.dataset.kind)")
                assert {"switch", "breaker_open"} <= set(kinds)
                tips = page.eval_on_selector_all(
                    "#timeline g.marker title", "ts => ts.map(t => t.textContent)")
                assert any("switched model m_a → m_b" in t for t in tips)
                assert any("breaker opened for actor actor_broken" in t for t in tips)
                assert page.locator("#timeline polyline[data-series='cpu_pct']").count() == 1
                assert errors == []
                if os.environ.get("INTERP_SCREENSHOT") == "docs":
                    shot = SCREENSHOT
                page.locator("#timeline-section").screenshot(path=str(shot))
                assert shot.stat().st_size > 5000
            finally:
                browser.close()
    finally:
        stop_process(proc)


def test_prune_removes_old_intervals_and_samples(db, conn, cli):
    make_workflow(conn, 62, steps=[{"number": 1, "kind": "gate",
                                    "gate_sql": "SELECT NULL::text AS subject_id, 'X' AS outcome"
                                                " WHERE false"}],
                  transitions=[])
    run = conn.execute("INSERT INTO interp.runs (workflow_id, worker_id, host, pid, "
                       "definition_version) VALUES (62, 'w', 'h', 1, 1) RETURNING run_id"
                       ).fetchone()["run_id"]
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    new = dt.datetime.now(dt.UTC)
    for at in (old, new):
        conn.execute("INSERT INTO interp.lane_intervals (run_id, worker_id, lane, cause, "
                     "started_at, ended_at) VALUES (%s, 'w', 'model', 'idle', %s, %s)",
                     (run, at, at + dt.timedelta(seconds=1)))
        conn.execute("INSERT INTO interp.utilisation (run_id, worker_id, at, cpu_pct) "
                     "VALUES (%s, 'w', %s, 50)", (run, at))
    dry = json.loads(cli("prune", "--workflow", "62", "--older-than", "30d", "--dry-run",
                         "--json").stdout)
    assert (dry["intervals_candidates"], dry["samples_candidates"]) == (1, 1)
    assert (dry["intervals_deleted"], dry["samples_deleted"]) == (0, 0)
    out = cli("prune", "--workflow", "62", "--older-than", "30d", "--batch-size", "1").stdout
    assert "deleted 1 lane interval(s) and 1 hardware sample(s)" in out
    left = conn.execute("SELECT (SELECT count(*) FROM interp.lane_intervals) AS i, "
                        "(SELECT count(*) FROM interp.utilisation) AS u").fetchone()
    assert (left["i"], left["u"]) == (1, 1)


def test_a_paused_workflow_shows_as_paused_lane_time_with_a_marker(db, conn, cli, smollm2):
    add_items(conn, 3)
    model_rows(conn, smollm2, ["m_a"])
    make_workflow(conn, 63, steps=[{"number": 1, "actor": "actor_m_a", "template": "label",
                                    "output_schema": SCHEMA}], transitions=[(1, "*", None)])
    conn.execute("UPDATE interp.workflows SET paused = true WHERE workflow_id = 63")
    stop = threading.Event()
    runner = Runner(db, 63, RunOptions(poll_s=0.05), stop=stop)
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(3)
    stop.set()
    thread.join(30)
    causes = [i["cause"] for i in run_intervals(conn, int(runner.run_id or 0))]
    assert "paused" in causes and "generating" not in causes, causes
    lane = json.loads(cli("status", "--workflow", "63", "--json").stdout)["lane_time"]
    assert lane["share"]["paused"] > 0.5
    data = json.loads(cli("timeline", "--workflow", "63", "--json").stdout)
    assert [m["kind"] for m in data["markers"]] == ["pause"]
