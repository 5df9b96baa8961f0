"""One rounding rule: interp status (Python) and the dashboard page (JavaScript) show
the same figure the same way, ties included (issue 22, item 8)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from interpreter.ops.figures import percent, round_half_up
from interpreter.ops.status import format_duration, render_status
from interpreter.ops.timeline import lane_line, model_event_text, render_timeline
from tests.helpers import REPO_ROOT

# Ties of the binary doubles (and near-ties on either side of them).
VALUES = [0.0, 0.5, 1.5, 2.5, 3.5, 0.25, 0.125, 0.375, 2.675, 1.005, 0.35, 12.25, 99.5,
          0.4999999999999999, 2.4999999999, 2.5000000001, 1e-9, 7.0, 1234.5]
SHARES = [0.025, 0.005, 0.015, 0.035, 0.045, 0.125, 0.0249, 0.0251, 0.5, 0.995, 1.0, 0.0]


def test_a_tie_rounds_half_up_as_the_page_does():
    assert percent(0.025) == "3"            # f"{2.5:.0f}" == "2": the failure of item 8
    assert percent(0.015) == "2" and percent(0.0249) == "2"
    assert round_half_up(0.25, 1) == "0.3" and round_half_up(12.25, 1) == "12.3"
    assert round_half_up(2.5) == "3" and round_half_up(3.5) == "4"
    # the exact value of the double decides, as toFixed does: 1.005 is 1.00499...
    assert round_half_up(1.005, 2) == "1.00" and round_half_up(0.35, 1) == "0.3"


def test_the_cli_lines_use_the_rule():
    assert lane_line({"share": {"generating": 0.975, "idle": 0.025}}) == \
        "lane 98% generating · 3% idle"
    assert format_duration(2.5) == "3s" and format_duration(90.5) == "1m31s"


def test_the_timeline_uses_the_rule():
    """The page's model-lane table shows a switch's duration_ms with Math.round (half
    up, for a duration); the marker text and `interp timeline` read the same."""
    event = {"event": "switch", "from_model": "a", "model": "b", "duration_ms": 12.5}
    assert model_event_text(event) == "switched model a → b (13 ms)"
    at = "2026-01-01T12:00:00+00:00"
    text = render_timeline({"workflow": 1, "since": "x", "markers": [], "intervals": [
        {"started_at": at, "ended_at": at, "seconds": 0.25, "run_id": 1, "cause": "idle",
         "model": None, "step": None, "subjects": None}]})
    assert " 0.3 " in text, text


def test_status_text_rounds_duty_and_rates_half_up():
    data = {"workflow": {"id": 1, "name": "w", "paused": False},
            "steps": [{"step": 1, "name": "a", "done": 1, "reached": 2, "velocity_per_min": 0.25,
                       "eta_s": 2.5, "state": "running"}],
            "totals": {"subjects": 2, "done": 1, "active": 1, "waiting": 1, "leased": 0,
                       "dead": 0, "checkpoints": 1, "completion_per_min": 0.25, "eta_s": 2.5},
            "model_lane": {"lanes": [{"run_id": 1, "status": "finished"}],
                           "duty_cycle": 0.125, "loaded_model": None, "switches": 0},
            "lane_time": {}, "alerts": []}
    text = render_status(data)
    assert "0.3/min" in text and "0.3 finished/min" in text
    assert "duty cycle 13%" in text and "ETA 3s" in text


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the page's script")
def test_the_page_and_python_agree_on_every_value():
    js = (REPO_ROOT / "interpreter" / "static" / "dashboard.js").read_text()
    fn = re.search(r"^function roundHalfUp\(.*$", js, re.M)
    assert fn, "dashboard.js has no roundHalfUp"
    pct = re.search(r"^function pct\(.*$", js, re.M)
    assert pct
    dur = re.search(r"^function duration\(.*?^}$", js, re.M | re.S)
    assert dur
    seconds = [0.4, 0.5, 2.5, 59.5, 89.5, 90.5, 3599.5, 7199.5, 86399.5, 90061.5, None]
    script = (fn.group(0) + "\n" + pct.group(0) + "\n" + dur.group(0) + "\n"
              + f"const v = {json.dumps(VALUES)}, s = {json.dumps(SHARES)};\n"
              + f"const d = {json.dumps(seconds)};\n"
              "console.log(JSON.stringify([v.map(x => roundHalfUp(x)), "
              "v.map(x => roundHalfUp(x, 1)), v.map(x => roundHalfUp(x, 2)), s.map(pct), "
              "d.map(duration)]));")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    page = json.loads(out)
    assert page == [[round_half_up(x) for x in VALUES], [round_half_up(x, 1) for x in VALUES],
                    [round_half_up(x, 2) for x in VALUES], [f"{percent(x)}%" for x in SHARES],
                    [format_duration(x) for x in seconds]]
