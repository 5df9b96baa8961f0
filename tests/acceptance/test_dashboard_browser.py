"""The dashboard in a real headless Chromium (Debian's chromium, driven by Playwright).

Skips cleanly when Playwright or /usr/bin/chromium is missing. Never runs
`playwright install`: it drives the system browser through executable_path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

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


@pytest.fixture
def dashboard(cli, conn):
    make_workflow(conn)
    conn.execute("UPDATE interp.workflows SET name = %s WHERE workflow_id = %s",
                 (HOSTILE_WORKFLOW, WF))
    port = free_port()
    proc = cli.popen("dashboard", "--port", str(port), "--workflow", str(WF),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url + "api/workflows", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
            # the velocity chart is inline SVG with a line for each active step
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
