"""`interp run`'s live view fits the terminal (issue 22, item 6): on 80x24 the 23 steps
of a workflow like 3001 are not cut to a list ending in `...`; the steps with work
are shown and the rest are folded into one line."""

from __future__ import annotations

import io

from rich.console import Console

from interpreter.llm.native_log import LineJoiner
from interpreter.ops.progress import LiveView, Snapshot, fold_steps, render_view

WORKING = (7, 12, 13)


def step(k: int) -> dict:
    work = k in WORKING
    finished = k < 7
    return {"step": k, "name": f"A rather long step name number {k}",
            "done": 25 if finished else (3 if work else 0),
            "reached": 25 if finished else (10 if work else 0),
            "waiting": 5 if work else 0, "leased": 2 if k == 12 else 0, "dead": 0,
            "velocity_per_min": 1.5 if work else 0.0, "eta_s": 30.0 if work else 0.0,
            "state": "running" if work else "idle"}


def snapshot(n: int = 23) -> Snapshot:
    return Snapshot(elapsed_s=12.0, run_id=5,
                    workflow={"id": 3001, "name": "postings", "paused": False},
                    steps=[step(k) for k in range(1, n + 1)],
                    totals={"done": 3, "subjects": 25, "active": 20, "dead": 0, "eta_s": 120})


def drawn(snap: Snapshot, width: int = 80, height: int = 24) -> list[str]:
    """What a terminal of that size shows of the live view's frame."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, height=height, force_terminal=True, record=True,
                      color_system=None)
    view = LiveView(buf, console=console)
    try:
        view.show(snap)
        # the frame as Live drew it, cropped to the terminal (with "..." when too tall)
        return [line.rstrip() for line in console.export_text(clear=True).splitlines()]
    finally:
        view.stop()


def test_on_80x24_the_steps_with_work_show_and_the_rest_fold_into_a_line():
    lines = drawn(snapshot())
    assert len(lines) <= 24
    assert not any(line.strip() in ("...", "…") for line in lines)
    rows = [line for line in lines if line.startswith(" Step ")]
    assert [int(r.split("|")[0].split()[1]) for r in rows] == list(WORKING)
    assert lines[-1] == "+ 20 more step(s): 6 finished, 14 not reached · 150 checkpoint(s) " \
                        "done there"
    # the state column, last, is on screen: the table was narrowed to 80 columns
    assert all(r.rstrip().endswith("running") for r in rows)
    assert all(len(line) <= 80 for line in lines)


def test_a_table_that_fits_is_shown_whole():
    lines = drawn(snapshot(12), width=200, height=40)
    assert len([line for line in lines if line.startswith(" Step ")]) == 12
    assert not any(line.startswith("+ ") for line in lines)


def test_more_steps_with_work_than_rows_folds_the_rest_and_says_so():
    steps = [step(k) for k in range(1, 24)]
    for s in steps:
        s.update(waiting=1, state="running")
    shown, summary = fold_steps(steps, 5)
    assert [s["step"] for s in shown] == [1, 2, 3, 4, 5]
    assert summary.startswith("+ 18 more step(s): 18 more with work")
    # the final summary (no terminal size) is the whole table
    assert render_view(snapshot()).count("\n Step ") == 23


def test_active_steps_are_shown_before_steps_that_only_finished_some_lately():
    """Mid-run, most early steps finished some subjects in the velocity window while
    the backlog waits at the last ones: those must be on screen, not folded."""
    steps = [step(k) for k in range(1, 24)]
    for s in steps:
        s.update(waiting=0, leased=0, velocity_per_min=2.0, state="idle", reached=25, done=25)
    for s in steps[20:]:
        s.update(waiting=8, state="running", done=17)
    shown, summary = fold_steps(steps, 18)
    assert [s["step"] for s in shown] == list(range(1, 16)) + [21, 22, 23]
    assert summary.startswith("+ 5 more step(s): 5 more with work")


def test_wide_characters_and_line_breaks_in_names_still_fit():
    """Widths are terminal cells (a CJK character takes two), and a name's line
    break does not make a step two lines: the state column stays on screen and
    the view is not cropped."""
    snap = snapshot()
    snap.workflow["name"] = "job\npostings"
    for s in snap.steps:
        s["name"] = "求职信息抽取步骤名称第" + str(s["step"])
    snap.steps[11]["name"] = "two\nlines"
    lines = drawn(snap, height=9)
    assert len(lines) == 9 and lines[0] == "Workflow 3001 · job postings"
    rows = [line for line in lines if line.startswith(" Step ")]
    assert [int(r.split("|")[0].split()[1]) for r in rows] == list(WORKING)
    assert all(r.rstrip().endswith("running") for r in rows), lines
    assert lines[-1].startswith("+ 20 more step(s)")


def test_native_log_pieces_are_joined_into_lines():
    lines: list[str] = []
    joiner = LineJoiner(lines.append)
    for piece in ("llama_kv_cache_iswa: using ", "full-size SWA cache\n", ".", ".", "\n",
                  "a\nb\n", "partial"):
        joiner.feed(piece)
    assert lines == ["llama_kv_cache_iswa: using full-size SWA cache", "..", "a", "b"]


def test_the_run_line_counts_cancelled_subjects_apart():
    """done + active + dead + cancelled = subjects: a cancelled subject is not lost."""
    from interpreter.ops.progress import run_line

    snap = snapshot()
    assert run_line(snap).endswith("3/25 subjects done, 20 active, 0 dead · ETA 2m00s")
    snap.totals = {"done": 3, "subjects": 25, "active": 18, "dead": 0, "cancelled": 2,
                   "eta_s": 120}
    assert "3/25 subjects done, 18 active, 0 dead, 2 cancelled · ETA" in run_line(snap)
