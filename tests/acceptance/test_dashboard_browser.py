"""The dashboard in a real headless Chromium (Debian's chromium, driven by Playwright).

Skips cleanly when Playwright or /usr/bin/chromium is missing. Never runs
`playwright install`: it drives the system browser through executable_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from interpreter.ops.figures import round_half_up
from interpreter.ops.status import format_duration
from tests.helpers import stop_process
from tests.integration.test_monitor import SCRIPT_NAME, WF, make_workflow

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("INTERP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE_WORKFLOW = '<img src=x onerror="window.__pwned=1">Jobs & <b>more</b>'


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (.venv/bin/pip install playwright)")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"dashboard did not answer at {url}")


@contextlib.contextmanager
def serve_dashboard(cli, workflow_id: int):
    """`interp dashboard` for one workflow on a free port, stopped on the way out."""
    port = free_port()
    proc = cli.popen("dashboard", "--port", str(port), "--workflow", str(workflow_id),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url + "api/workflows", proc)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def dashboard(cli, conn):
    make_workflow(conn)
    conn.execute("UPDATE interp.workflows SET name = %s WHERE workflow_id = %s",
                 (HOSTILE_WORKFLOW, WF))
    with serve_dashboard(cli, WF) as url:
        yield url


def test_page_matches_status_json_and_escapes_text(dashboard, cli):
    sync_playwright = _playwright()
    expected = json.loads(cli("status", "--workflow", str(WF), "--json").stdout)
    dialogs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(dashboard)
            page.wait_for_selector("#steps tbody tr[data-step='10']", timeout=15000)

            rows = page.eval_on_selector_all("#steps tbody tr", """rows => rows.map(r => ({
                step: Number(r.dataset.step),
                label: r.querySelector('.step').textContent,
                name: r.querySelector('.name').textContent,
                done: Number(r.querySelector('.done').textContent),
                total: Number(r.querySelector('.total').textContent),
                velocity: parseFloat(r.querySelector('.velocity').textContent),
                eta: r.querySelector('.eta').textContent,
                state: r.querySelector('.state').textContent,
                fill: r.querySelector('.fill').style.width,
            }))""")
            want = {s["step"]: s for s in expected["steps"]}
            assert [r["step"] for r in rows] == sorted(want)
            for r in rows:
                s = want[r["step"]]
                assert r["name"] == s["name"]
                assert (r["done"], r["total"], r["state"]) == (s["done"], s["reached"], s["state"])
                assert r["velocity"] == pytest.approx(s["velocity_per_min"], rel=0.2, abs=0.11)
                assert r["label"].replace("\u00a0", " ") == f"Step {r['step']:>2}"
            # the hostile step name is text, not markup
            assert rows[-1]["name"] == SCRIPT_NAME
            assert page.locator("#steps script").count() == 0
            # totals and the dead-letter / stall alerts
            totals = {el.get_attribute("data-key"): el.text_content()
                      for el in page.query_selector_all("#totals dd")}
            t = expected["totals"]
            for key in ("subjects", "done", "active", "waiting", "leased", "dead", "checkpoints"):
                assert totals[key] == str(t[key]), key
            alerts = page.locator("#alerts li").all_text_contents()
            assert alerts == expected["alerts"]
            assert page.locator("#health").text_content() == "needs attention"
            # the workflow name, with markup in it, shows verbatim
            assert page.locator("#wf-title").text_content() == f"{WF} · {HOSTILE_WORKFLOW}"
            assert page.locator("header img").count() == 0
            # the workflow chart is inline SVG with lines (finished per minute, tokens/s)
            assert page.locator("#chart polyline").count() >= 2
            # it refreshes itself
            first = page.evaluate("document.body.dataset.generatedAt")
            # (polled from here: the page's CSP forbids the eval wait_for_function uses)
            deadline = time.monotonic() + 10
            while page.evaluate("document.body.dataset.generatedAt") == first:
                assert time.monotonic() < deadline, "the page did not refresh"
                page.wait_for_timeout(200)
            assert page.evaluate("window.__pwned") is None
            assert dialogs == []
            assert errors == []
        finally:
            browser.close()


def test_api_endpoints(dashboard):
    with urllib.request.urlopen(dashboard + f"api/velocity?workflow={WF}&minutes=10") as r:
        series = json.load(r)
    assert len(series["minutes"]) == 10
    assert {s["step"] for s in series["steps"]} == {1, 2, 10}
    assert sum(sum(s["counts"]) for s in series["steps"]) >= 50 + 20
    with urllib.request.urlopen(dashboard + "api/workflows") as r:
        assert json.load(r)["workflows"][0]["workflow_id"] == WF
    try:
        urllib.request.urlopen(dashboard + "api/status?workflow=424242")
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    with urllib.request.urlopen(dashboard) as r:
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    with urllib.request.urlopen(dashboard + "api/status") as r:  # the default workflow
        assert json.load(r)["workflow"]["id"] == WF
    for path, code in [("api/status?workflow=abc", 400), ("api/nope", 404),
                       ("static/..%2F..%2Fdashboard.py", 404), ("static/../dashboard.py", 404)]:
        try:
            urllib.request.urlopen(dashboard + path)
            raise AssertionError(f"expected {code} for {path}")
        except urllib.error.HTTPError as exc:
            assert exc.code == code, path
            assert "error" in json.load(exc)


def test_port_in_use_is_one_clear_line(cli, conn):
    make_workflow(conn)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = cli("dashboard", "--port", str(port), check=False, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: port {port} on 127.0.0.1 is already in use; "
                                   "pick another with --port")


# ---------------------------------------------------------------- the charts

LONG_WF = 9023
#: The step names of workflow 3001, for a 23-step workflow of the same shape
#: (linear here, so that who is where has a known answer).
STEP_NAMES_3001 = [
    "Admit", "Check if Summary Exists", "Extract", "Grade", "Second grade", "Improve", "Regrade",
    "Flag for human review", "Format", "Save summary", "Check if Skills Exist", "Extract skills",
    "Normalise skills", "Map skills to canonical list", "Save skills", "Check if IHL Exists",
    "IHL text signals", "IHL evidence", "IHL Analyst", "IHL Skeptic",
    "IHL HR Expert - Final Verdict", "Save IHL verdict", "Both grades pass?"]
MODEL_STEPS = {3, 4, 5, 6, 7, 9, 12, 19, 20, 21}
TIME_LABEL = re.compile(r"^\d\d:\d\d$")


def make_long_workflow(conn, wf: int = LONG_WF, *, finished: int = 0) -> None:
    """A 23-step workflow, each step going on to the next, in the middle of a run:

    - f01..: `finished` subjects went through all 23 steps between 58 and about
      25 minutes ago (none finished within the velocity window);
    - a1-a8 passed steps 1-19 (step 18 about 4 minutes ago, step 19 about 1
      minute ago: inside the velocity window; the others long enough ago to be
      outside it for the whole test) and are leased at step 20, whose first wave
      has not checkpointed yet;
    - b1-b4 passed steps 1-17 and wait at step 18.
    Model steps record tokens, at a speed that depends on the step.
    """
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES "
                 "('chart_model', 'model', 'm1'), ('chart_cheap', 'sql', 'SELECT 1') "
                 "ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (%s, 'job pipeline (23 steps)', 'public.postings', 'posting_id')", (wf,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor) "
            "VALUES (%s, %s, %s, 'actor', %s)",
            [(wf, i, name, "chart_model" if i in MODEL_STEPS else "chart_cheap")
             for i, name in enumerate(STEP_NAMES_3001, start=1)])
        cur.executemany(
            "INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) "
            "VALUES (%s, %s, '*', %s)",
            [(wf, i, i + 1 if i < 23 else None) for i in range(1, 24)])
        subjects, checkpoints = _long_workflow_rows(finished)
        cur.executemany(
            "INSERT INTO interp.subject_state (workflow_id, subject_id, step, status, "
            "lease_owner, lease_expires, next_attempt_at) VALUES (%s, %s, %s, %s, %s, "
            "CASE WHEN %s THEN now() + interval '5 minutes' END, now() - interval '1 minute')",
            [(wf, sid, step, status, "w1" if status == "leased" else None, status == "leased")
             for sid, step, status in subjects])
        cur.executemany(
            "INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, attempt, ok, "
            "outcome, started_at, finished_at, model, prompt_tokens, completion_tokens, gen_ms) "
            "VALUES (%s, %s, %s, 1, 1, true, 'DONE', "
            "now() - make_interval(secs => %s + 1), now() - make_interval(secs => %s), "
            "%s, %s, %s, %s)",
            [(wf, sid, step, ago, ago, *_model_audit(step)) for sid, step, ago in checkpoints])


def _long_workflow_rows(finished: int):
    """(subject, step, status) and (subject, step, seconds ago) for make_long_workflow."""
    subjects, checkpoints = [], []
    for k in range(finished):
        sid = f"f{k + 1:02d}"
        subjects.append((sid, None, "done"))
        checkpoints += [(sid, j, 58 * 60 - k * 90 - j * 4) for j in range(1, 24)]
    for group, last_step, status_step, status in (("a", 19, 20, "leased"),
                                                   ("b", 17, 18, "ready")):
        for k in range(8 if group == "a" else 4):
            sid = f"{group}{k + 1}"
            subjects.append((sid, status_step, status))
            checkpoints += [(sid, j, _seconds_ago(j) + k * 5) for j in range(1, last_step + 1)]
    return subjects, checkpoints


def _seconds_ago(step: int) -> int:
    """When group a/b's first subject passed `step`."""
    return {19: 60, 18: 200}.get(step, 500 + (17 - step) * 140)


def clear_of_minute_boundary(conn, needed_s: float = 15) -> None:
    """Wait, if need be, until the next `needed_s` seconds stay within one minute.

    The velocity window is whole minutes, so the velocities (and an ETA made
    from them) drift as the clock moves and jump when a minute begins; a test
    that compares a figure taken at two moments does so inside one minute.
    """
    second = float(conn.execute("SELECT extract(second FROM now()) AS s").fetchone()["s"])
    if second > 60 - needed_s:
        time.sleep(60.5 - second)


def _model_audit(step: int):
    """model, prompt tokens, completion tokens, gen ms: 40, 28.6, 22.2 or 18.2 tokens/s."""
    if step not in MODEL_STEPS:
        return None, None, None, None
    tokens = 100 + (step * 37) % 150
    return "m1", 300, tokens, tokens * (25 + (step % 4) * 10)


@contextlib.contextmanager
def browser_page():
    """A page in headless Chromium; on the way out, no script error and no dialog."""
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
            yield page
            assert problems == []
        finally:
            browser.close()


def api(url: str):
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def duration_s(text: str) -> int:
    """Seconds from a duration as `interp status` writes it (45s, 3m07s, 2h05m, 1d03h)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


def summary_figures(page) -> dict[str, str]:
    return {el.get_attribute("data-key"): el.text_content()
            for el in page.query_selector_all("#overview-summary [data-key]")}


def test_sparkline_per_step_and_one_chart_with_time_labels(dashboard, cli):
    expected = json.loads(cli("status", "--workflow", str(WF), "--json").stdout)
    series = api(dashboard + f"api/velocity?workflow={WF}")
    overview = api(dashboard + f"api/overview?workflow={WF}")
    # the fixture's known answers: 40 subjects finished at step 10 half an hour
    # ago; the model step made 20 tokens in 0.9 s per subject
    assert sum(overview["finished"]) == 40
    assert {v for v in overview["tokens_per_s"] if v is not None} == {22.2}
    with browser_page() as page:
        page.goto(dashboard)
        page.wait_for_selector("#steps tbody tr[data-step='10'] svg.sparkline", timeout=15000)
        rows = page.eval_on_selector_all("#steps tbody tr", """rows => rows.map(r => ({
            step: Number(r.dataset.step),
            sparklines: r.querySelectorAll('svg.sparkline').length,
            total: Number(r.querySelector('svg.sparkline').dataset.total),
        }))""")
        counts = {s["step"]: sum(s["counts"]) for s in series["steps"]}
        assert [r["step"] for r in rows] == [s["step"] for s in expected["steps"]]
        for r in rows:
            assert r["sparklines"] == 1
            assert r["total"] == counts[r["step"]], r
        # one chart for the whole workflow, above the table, with a time axis
        assert page.locator("svg#chart").count() == 1
        chart_box, table_box = (page.locator(sel).bounding_box() for sel in ("#chart", "#steps"))
        assert chart_box["y"] + chart_box["height"] <= table_box["y"]
        labels = page.locator("#chart .time-label").all_text_contents()
        assert len(labels) >= 4 and all(TIME_LABEL.match(t) for t in labels), labels
        assert len(set(labels)) == len(labels)
        # a marker per minute with model output, and the headline figures of status --json
        assert page.locator("#chart circle.tokens-point").count() == \
            sum(v is not None for v in overview["tokens_per_s"])
        t = expected["totals"]
        figures = summary_figures(page)
        assert figures["completion_per_min"] == round_half_up(t["completion_per_min"], 1)
        assert figures["eta_s"] == format_duration(t["eta_s"])
        assert figures["active"] == str(t["active"])
        assert figures["done"] == f"{t['done']} of {t['subjects']}"
        assert figures["tokens_per_s"].startswith("22.2 tokens/s at ")


def test_eta_while_subjects_move_and_none_has_finished(cli, conn):
    make_long_workflow(conn)
    clear_of_minute_boundary(conn)
    status = json.loads(cli("status", "--workflow", str(LONG_WF), "--json").stdout)
    steps = {s["step"]: s for s in status["steps"]}
    t = status["totals"]
    # subjects are moving (steps 18 and 19 have velocity), none has finished, and
    # step 20's first wave has no velocity yet: the old rule said "?"
    assert (t["done"], t["completion_per_min"], t["active"]) == (0, 0, 12)
    assert steps[19]["velocity_per_min"] > 0 and steps[20]["eta_s"] is None
    assert steps[20]["state"] == "running"
    # the estimate from the steps' velocities: 4 subjects with 6 steps to go and
    # 8 with 4, over the checkpoints per minute of all the steps
    per_min = sum(s["velocity_per_min"] for s in status["steps"])
    assert t["eta_s"] == pytest.approx((4 * 6 + 8 * 4) * 60 / per_min, abs=1)
    with serve_dashboard(cli, LONG_WF) as url, browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#steps tbody tr[data-step='23'] svg.sparkline", timeout=15000)
        # (the velocities, and so the estimate, move a little with the clock)
        shown = summary_figures(page)["eta_s"]
        assert duration_s(shown) == pytest.approx(t["eta_s"], rel=0.1)
        assert page.locator("#totals dd[data-key='eta_s']").text_content() == shown


def test_23_step_workflow_is_readable(cli, conn):
    make_long_workflow(conn, finished=20)
    clear_of_minute_boundary(conn)
    status = json.loads(cli("status", "--workflow", str(LONG_WF), "--json").stdout)
    shots = Path(os.environ.get("INTERP_SCREENSHOT_DIR") or "/tmp")
    with serve_dashboard(cli, LONG_WF) as url, browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#steps tbody tr[data-step='23'] svg.sparkline", timeout=15000)
        assert page.locator("#steps tbody tr svg.sparkline").count() == 23
        # one chart, not 23 tangled lines: two series, finished and tokens/s
        assert set(page.eval_on_selector_all(
            "#chart polyline", "ls => ls.map(l => l.getAttribute('class'))")) == \
            {"finished", "tokens"}
        page.screenshot(path=str(shots / "interp-dashboard-23-steps.png"), full_page=True)
        # every step row fits on one line: the rows are as tall as each other
        heights = page.eval_on_selector_all(
            "#steps tbody tr", "rs => rs.map(r => Math.round(r.getBoundingClientRect().height))")
        assert max(heights) - min(heights) <= 1, heights
        shown = summary_figures(page)["eta_s"]
        assert duration_s(shown) == pytest.approx(status["totals"]["eta_s"], rel=0.1)
