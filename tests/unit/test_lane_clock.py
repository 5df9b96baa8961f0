"""The lane clock on its own: intervals that always meet, loads cut out of the
interval they happened in, and the write protocol (running interval written,
then extended; ended intervals dropped once written as they are).

The clock reads the time through `LaneClock.now`; every test gives its clock a
hand-driven time instead (`Time`), so each interval lasts exactly what the test
says: the too-short interval (MIN_INTERVAL_S) and the hand-over before a load
(HANDOVER_S) are decided on those figures, never on how long a sleep or a
preemption on a loaded machine really took."""

from __future__ import annotations

import pytest

from interpreter import lane_clock
from interpreter.lane_clock import LaneClock


class Time:
    """A clock that stands still until the test advances it. It starts at a small
    figure, not at an epoch, so that the intervals' lengths are exact to ~1e-13 s."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def clocked(**kw) -> tuple[LaneClock, Time]:
    """A clock whose time moves only by `Time.advance`."""
    clock, time = LaneClock(**kw), Time()
    clock.now = time   # the clock's one time source (an instance attribute shadows the method)
    return clock, time


def meet(rows):
    """Asserts the rows are contiguous and ordered; returns their causes."""
    for a, b in zip(rows, rows[1:], strict=False):
        assert a["ended"] == b["started"], (a, b)
        assert a["started"] <= a["ended"]
    return [r["cause"] for r in rows]


def rows(clock):
    return [r for _, _, r in clock.pending()]


def test_intervals_meet_end_to_start_and_a_repeated_cause_goes_on():
    clock, time = clocked()
    clock.enter("idle")
    time.advance(0.01)
    clock.enter("idle")          # the same: no new interval
    clock.enter("waiting_claim")
    time.advance(0.01)
    clock.enter("generating", model="m", step=2, subjects=8, new=True)
    time.advance(0.01)
    clock.enter("generating", model="m", step=2, subjects=8, new=True)  # the next wave
    time.advance(0.01)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["idle", "waiting_claim", "generating", "generating"]
    assert got[2]["model"] == "m" and got[2]["step"] == 2 and got[2]["subjects"] == 8
    clock.enter("idle")          # after finish: nothing
    assert len(rows(clock)) == 4


def test_a_too_short_interval_is_taken_over_by_the_next_cause():
    clock, time = clocked()
    clock.enter("waiting_claim")
    # No time passes (less than MIN_INTERVAL_S): the claim wait is no row of its own.
    clock.enter("generating", new=True)
    time.advance(0.01)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["generating"]
    assert got[0]["ended"] - got[0]["started"] == pytest.approx(0.01)   # from the first start


def test_an_interval_as_long_as_the_minimum_is_kept():
    # The other side of the threshold above, so that it is a threshold.
    clock, time = clocked()
    clock.enter("waiting_claim")
    time.advance(2 * lane_clock.MIN_INTERVAL_S)
    clock.enter("generating", new=True)
    time.advance(0.01)
    clock.finish()
    assert meet(rows(clock)) == ["waiting_claim", "generating"]


def test_a_load_is_cut_out_of_the_interval_it_happened_in_and_a_switch_relabels_it():
    clock, time = clocked()
    clock.enter("waiting_claim")
    time.advance(0.05)
    clock.enter("generating", model="b", step=1, subjects=4, new=True)
    time.advance(0.1)
    clock.took("loading", 0.03, model="b")     # the last 30 ms were a load
    clock.relabel_last("loading", "switching")  # ... of a switch
    time.advance(0.02)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["waiting_claim", "generating", "switching", "generating"]
    assert got[1]["ended"] - got[1]["started"] == pytest.approx(0.07)
    assert got[2]["ended"] - got[2]["started"] == pytest.approx(0.03)
    assert got[3]["ended"] - got[3]["started"] == pytest.approx(0.02)
    assert got[2]["model"] == "b" and got[3]["subjects"] == 4


def test_a_load_longer_than_the_interval_becomes_that_interval():
    clock, time = clocked()
    clock.enter("idle")
    time.advance(0.02)
    clock.enter("generating", model="a", step=1, subjects=2, new=True)
    time.advance(0.01)
    clock.took("loading", 5.0, model="a")   # it cannot start before its interval did
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["idle", "loading", "generating"]
    assert got[1]["ended"] - got[1]["started"] == pytest.approx(0.01)


def test_a_wave_whose_load_began_just_after_its_interval_counts_its_subjects_once():
    # the generation thread began the load a few ms after the lane thread entered
    # "generating": that hand-over is no generation of its own
    clock, time = clocked()
    clock.enter("idle")
    time.advance(0.02)
    clock.enter("generating", model="a", step=1, subjects=4, new=True)
    handover = lane_clock.HANDOVER_S / 5     # well inside the hand-over
    time.advance(handover + 0.03)
    clock.took("loading", 0.03, model="a")
    time.advance(0.02)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["idle", "loading", "generating"]
    assert got[1]["ended"] - got[1]["started"] == pytest.approx(handover + 0.03)
    assert sum(r["subjects"] or 0 for r in got if r["cause"] == "generating") == 4


def test_a_load_that_began_after_the_hand_over_leaves_the_generation_before_it():
    # The other side of HANDOVER_S: a load that began later than a hand-over is cut
    # out of the wave's interval, which keeps its generating time before the load.
    clock, time = clocked()
    clock.enter("generating", model="a", step=1, subjects=4, new=True)
    time.advance(2 * lane_clock.HANDOVER_S + 0.03)
    clock.took("loading", 0.03, model="a")
    time.advance(0.02)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["generating", "loading", "generating"]
    assert got[0]["ended"] - got[0]["started"] == pytest.approx(2 * lane_clock.HANDOVER_S)


def test_written_intervals_leave_memory_and_the_running_one_is_extended():
    clock, time = clocked()
    clock.enter("idle")
    time.advance(0.01)
    clock.enter("breaker", step=3)
    first = clock.pending()
    assert [r["cause"] for _, _, r in first] == ["idle", "breaker"]
    clock.written([(i, v, n) for n, (i, v, _) in enumerate(first, start=10)])
    # The ended one is gone; the running one stays, now with its row id.
    second = clock.pending()
    assert [(r["cause"], r["id"]) for _, _, r in second] == [("breaker", 11)]
    time.advance(0.01)
    extended = clock.pending()[0][2]["ended"]
    assert extended - second[0][2]["ended"] == pytest.approx(0.01)   # extended to now
    clock.enter("idle")
    third = clock.pending()
    assert [(r["cause"], r["id"]) for _, _, r in third] == [("breaker", 11), ("idle", None)]


def test_a_change_while_being_written_is_written_again():
    clock, time = clocked()
    clock.enter("idle")
    time.advance(0.01)
    clock.enter("generating", new=True)
    time.advance(lane_clock.HANDOVER_S + 0.03)   # longer than a hand-over: the load is cut out
    batch = clock.pending()
    clock.took("loading", 0.005)     # changes the ended 'generating' after the snapshot
    clock.written([(i, v, n) for n, (i, v, _) in enumerate(batch, start=1)])
    again = [r for _, _, r in clock.pending()]
    assert ("generating", 2) in [(r["cause"], r["id"]) for r in again]


def test_a_disabled_clock_records_nothing():
    clock, _ = clocked(enabled=False)
    clock.enter("idle")
    clock.took("loading", 1.0)
    clock.finish()
    assert clock.pending() == []


def test_unknown_causes_are_refused():
    with pytest.raises(ValueError):
        LaneClock().enter("napping")

