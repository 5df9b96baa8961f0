"""`interp run` shows its progress: a live view on a terminal (driven here through a
pseudo-terminal, as a user's shell would), log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from itertools import pairwise

import pytest

from interpreter.engine import RunSummary
from interpreter.ops.progress import ProgressSource, model_tokens_per_s
from tests.helpers import REPO_ROOT

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HIDE_CURSOR, SHOW_CURSOR, ERASE_LINE = "\x1b[?25l", "\x1b[?25h", "\x1b[2K"
HEAD = "Workflow 1001 · Posting word counts"


@pytest.fixture
def worked_example(cli, conn):
    """Workflow 1001 over two enabled postings (and one disabled)."""
    cli("seed", "load", "seeds/0010_domain.sql", "seeds/1001_example_word_count.sql")
    conn.execute("INSERT INTO public.postings (posting_id, title, description, enabled) VALUES "
                 "(1, 'a', repeat('w ', 200), true), (2, 'b', 'short', true), "
                 "(3, 'c', 'off', false)")
    return cli


class Terminal:
    """`interp` on a pseudo-terminal of 120x40: all it writes, as a terminal receives it."""

    def __init__(self, cli, *args: str):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = cli.env()
        env["TERM"] = "xterm-256color"
        for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "LINES"):
            env.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "interpreter", *args], env=env,
                                     cwd=REPO_ROOT, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self.read_all, daemon=True)
        self.reader.start()

    def read_all(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")

    def wait_for(self, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            assert time.monotonic() < deadline, f"timed out; the terminal shows:\n{self.text}"
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.text}"
            time.sleep(0.1)

    def finish(self, timeout: float = 60) -> str:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        os.close(self.master)
        return self.text


def final_screen(raw: str) -> str:
    """What stays on the screen: the text after the live region was erased for the last time."""
    return ANSI.sub("", raw.rsplit(ERASE_LINE, 1)[-1]).replace("\r", "")


def test_live_view_on_a_terminal_leaves_a_final_summary(worked_example):
    term = Terminal(worked_example, "run", "--workflow", "1001", "--until-idle")
    raw = term.finish()
    assert term.proc.returncode == 0, raw
    assert HIDE_CURSOR in raw and SHOW_CURSOR in raw   # a live region, and the cursor given back
    screen = final_screen(raw)
    lines = screen.splitlines()
    assert lines[0] == HEAD
    # The rows of `interp status`: right-aligned step numbers, done of reached.
    for number, name in ((1, "Check if counted"), (2, "Count words"), (3, "Save count")):
        assert any(re.match(rf"^ Step  {number} \| {name} +\| +2 \| +2 \| █+ \| 100% \|", line)
                   for line in lines), (number, screen)
    assert "Model lane: no model steps" in lines
    # The view's tally is the run's own: the one-line summary after it says the same.
    summary = re.search(r"^run (\d+) finished: 2 admitted, 6 checkpoints in (\d+) waves",
                        screen, re.M)
    assert summary, screen
    run_id, waves = summary.groups()
    run_line = next(line for line in lines if line.startswith("Run "))
    assert re.match(rf"^Run {run_id} finished · [\d.]+s · {waves} waves \([\d.]+/s\) · "
                    r"6 checkpoints · 2 admitted · 2/2 subjects done, 0 active, 0 dead$",
                    run_line), run_line


def test_live_view_redraws_every_second_and_stops_promptly(worked_example):
    """Without --until-idle the worker idles; the view keeps its clock running, and
    Ctrl-C ends the run, the view and the process within seconds."""
    term = Terminal(worked_example, "run", "--workflow", "1001", "--poll", "0.2")
    term.wait_for(lambda text: text.count(HEAD) >= 4 and "2/2 subjects done" in text)
    frames = [ANSI.sub("", frame) for frame in term.text.split(HEAD)[1:]]
    clocks = [re.search(r"^Run \S+ running · ([\d.]+)s", frame, re.M) for frame in frames]
    seconds = [float(c.group(1)) for c in clocks if c]
    assert len(seconds) >= 3 and seconds == sorted(seconds) and seconds[-1] >= 2, frames
    interrupted = time.monotonic()
    term.proc.send_signal(signal.SIGINT)
    raw = term.finish(timeout=30)
    assert time.monotonic() - interrupted < 10
    assert term.proc.returncode == 0, raw
    screen = final_screen(raw)
    assert "stopping after the current wave (SIGINT)" in ANSI.sub("", raw)
    assert re.search(r"^Run \d+ stopped · ", screen, re.M), screen
    assert re.search(r"^run \d+ stopped:", screen, re.M), screen
    assert raw.rstrip().endswith("switches") and SHOW_CURSOR in raw


def test_quiet_on_a_terminal_draws_nothing(worked_example):
    term = Terminal(worked_example, "run", "--workflow", "1001", "--until-idle", "--quiet")
    raw = term.finish()
    assert term.proc.returncode == 0
    assert HIDE_CURSOR not in raw and "Step  1" not in raw and HEAD not in raw
    assert re.fullmatch(r"run \d+ finished: 2 admitted, 6 checkpoints in \d+ waves, "
                        r"0 model loads, 0 switches\s*", raw), raw


def parse_text_line(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_log_lines_without_a_terminal_one_per_interval(worked_example):
    proc = worked_example.popen("run", "--workflow", "1001", "--poll", "0.2",
                                "--progress-every", "1", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while sum(" interp progress " in line for line in lines) < 4:
        assert time.monotonic() < deadline and proc.poll() is None, lines
        lines.append(proc.stderr.readline())
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    lines += rest.splitlines()
    assert proc.returncode == 0
    assert not any(ANSI.search(line) for line in lines)
    progress = [parse_text_line(line) for line in lines if " interp progress " in line]
    gaps = [float(b["elapsed_s"]) - float(a["elapsed_s"]) for a, b in pairwise(progress)]
    assert all(0.8 <= gap <= 5 for gap in gaps), gaps
    last = progress[-1]
    assert (last["workflow"], last["done"], last["subjects"], last["active"]) == ("1001", "2",
                                                                               "2", "0")
    assert last["steps"] == "1:2/2,2:2/2,3:2/2"
    end = [parse_text_line(line) for line in lines if " interp run_end " in line]
    assert len(end) == 1 and end[0]["status"] == "stopped"
    assert end[0]["checkpoints"] == "6" and end[0]["run_id"] == last["run_id"]


def test_log_lines_as_json(worked_example):
    proc = worked_example("run", "--workflow", "1001", "--until-idle", "--log-format", "json",
                          "--progress-every", "1", "--json")
    summary = json.loads(proc.stdout)                      # stdout keeps only the summary
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert records and records[0]["event"] == "progress"
    end = records[-1]
    assert end["event"] == "run_end" and [r["event"] for r in records].count("run_end") == 1
    assert end["run_id"] == summary["run_id"] and end["status"] == "finished"
    assert (end["waves"], end["checkpoints"], end["admitted"]) == (summary["waves"], 6, 2)
    assert (end["done"], end["subjects"], end["active"], end["dead"]) == (2, 2, 0, 0)
    assert [(s["step"], s["done"], s["of"]) for s in end["steps"]] == [(1, 2, 2), (2, 2, 2),
                                                                         (3, 2, 2)]
    assert end["model"] is None and end["tokens_per_s"] is None
    # With --json the run's summary is on stdout: every line on stderr is a record.
    assert len(records) == len(proc.stderr.splitlines())


def test_quiet_without_a_terminal_logs_no_progress(worked_example):
    proc = worked_example("run", "--workflow", "1001", "--until-idle", "--quiet",
                          "--progress-every", "1")
    assert re.fullmatch(r"run \d+ finished: 2 admitted, 6 checkpoints in \d+ waves, "
                        r"0 model loads, 0 switches\n", proc.stderr), proc.stderr


class FakeRun:
    run_id = 7
    summary = RunSummary(7, "w", waves=3, checkpoints=9, admitted=2, by_step={1: 5, 2: 4})


def test_an_unreachable_database_is_reported_once_and_the_tally_still_shows():
    notes: list[str] = []
    source = ProgressSource("postgresql://nobody@127.0.0.1:1/none", 1001, FakeRun())
    source.on_error = notes.append
    first, second = source.snapshot(), source.snapshot(final=True)
    assert len(notes) == 1 and "cannot read the workflow's figures" in notes[0]
    assert (first.waves, first.checkpoints, first.admitted, first.steps) == (3, 9, 2, [])
    assert second.final and second.by_step == {1: 5, 2: 4} and second.waves_per_s is not None


def test_model_tokens_per_s_counts_the_runs_last_minute(worked_example, conn):
    run = conn.execute("INSERT INTO interp.runs (workflow_id, worker_id, host, pid, "
                       "definition_version, started_at) VALUES (1001, 'w', 'h', 1, 1, "
                       "now() - interval '10 minutes') RETURNING run_id").fetchone()["run_id"]
    other = conn.execute("INSERT INTO interp.runs (workflow_id, worker_id, host, pid, "
                         "definition_version) VALUES (1001, 'x', 'h', 2, 1) "
                         "RETURNING run_id").fetchone()["run_id"]
    for subject, run_id, age_s, tokens in (("1", run, 5, 300), ("2", run, 30, 300),
                                          ("1", run, 300, 5000), ("2", other, 5, 5000)):
        conn.execute("INSERT INTO interp.checkpoints (workflow_id, subject_id, step, visit, "
                     "attempt, ok, outcome, started_at, finished_at, run_id, "
                     "completion_tokens) VALUES (1001, %s, 2, %s, 1, true, 'SHORT', "
                     "now() - make_interval(secs => %s), now() - make_interval(secs => %s), "
                     "%s, %s)", (subject, age_s, age_s + 1, age_s, run_id, tokens))
    # 600 tokens of this run in the last minute; the old one and the other run's do not count.
    assert model_tokens_per_s(conn, run) == pytest.approx(10.0, abs=0.2)
