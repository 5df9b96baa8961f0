"""The lane clock on its own: intervals that always meet, loads cut out of the
interval they happened in, and the write protocol (running interval written,
then extended; ended intervals dropped once written as they are)."""

from __future__ import annotations

import time

import pytest

from interpreter.lane_clock import LaneClock


def meet(rows):
    """Asserts the rows are contiguous and ordered; returns their causes."""
    for a, b in zip(rows, rows[1:], strict=False):
        assert a["ended"] == b["started"], (a, b)
        assert a["started"] <= a["ended"]
    return [r["cause"] for r in rows]


def rows(clock):
    return [r for _, _, r in clock.pending()]


def test_intervals_meet_end_to_start_and_a_repeated_cause_goes_on():
    clock = LaneClock()
    clock.enter("idle")
    time.sleep(0.01)
    clock.enter("idle")          # the same: no new interval
    clock.enter("waiting_claim")
    time.sleep(0.01)
    clock.enter("generating", model="m", step=2, subjects=8, new=True)
    time.sleep(0.01)
    clock.enter("generating", model="m", step=2, subjects=8, new=True)  # the next wave
    time.sleep(0.01)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["idle", "waiting_claim", "generating", "generating"]
    assert got[2]["model"] == "m" and got[2]["step"] == 2 and got[2]["subjects"] == 8
    clock.enter("idle")          # after finish: nothing
    assert len(rows(clock)) == 4


def test_a_too_short_interval_is_taken_over_by_the_next_cause():
    clock = LaneClock()
    clock.enter("waiting_claim")
    clock.enter("generating", new=True)   # at once: the claim wait is no row of its own
    time.sleep(0.01)
    clock.finish()
    assert meet(rows(clock)) == ["generating"]


def test_a_load_is_cut_out_of_the_interval_it_happened_in_and_a_switch_relabels_it():
    clock = LaneClock()
    clock.enter("waiting_claim")
    time.sleep(0.05)
    clock.enter("generating", model="b", step=1, subjects=4, new=True)
    time.sleep(0.1)
    clock.took("loading", 0.03, model="b")     # the last 30 ms were a load
    clock.relabel_last("loading", "switching")  # ... of a switch
    time.sleep(0.02)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["waiting_claim", "generating", "switching", "generating"]
    assert got[2]["ended"] - got[2]["started"] == pytest.approx(0.03, abs=0.005)
    assert got[2]["model"] == "b" and got[3]["subjects"] == 4


def test_a_load_longer_than_the_interval_becomes_that_interval():
    clock = LaneClock()
    clock.enter("idle")
    time.sleep(0.02)
    clock.enter("generating", model="a", step=1, subjects=2, new=True)
    time.sleep(0.01)
    clock.took("loading", 5.0, model="a")   # it cannot start before its interval did
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["idle", "loading", "generating"]


def test_a_wave_whose_load_began_just_after_its_interval_counts_its_subjects_once():
    # the generation thread began the load a few ms after the lane thread entered
    # "generating": that hand-over is no generation of its own
    clock = LaneClock()
    clock.enter("idle")
    time.sleep(0.02)
    clock.enter("generating", model="a", step=1, subjects=4, new=True)
    time.sleep(0.04)
    clock.took("loading", 0.03, model="a")
    time.sleep(0.02)
    clock.finish()
    got = rows(clock)
    assert meet(got) == ["idle", "loading", "generating"]
    assert sum(r["subjects"] or 0 for r in got if r["cause"] == "generating") == 4


def test_written_intervals_leave_memory_and_the_running_one_is_extended():
    clock = LaneClock()
    clock.enter("idle")
    time.sleep(0.01)
    clock.enter("breaker", step=3)
    first = clock.pending()
    assert [r["cause"] for _, _, r in first] == ["idle", "breaker"]
    clock.written([(i, v, n) for n, (i, v, _) in enumerate(first, start=10)])
    # The ended one is gone; the running one stays, now with its row id.
    second = clock.pending()
    assert [(r["cause"], r["id"]) for _, _, r in second] == [("breaker", 11)]
    time.sleep(0.01)
    assert second[0][2]["ended"] < clock.pending()[0][2]["ended"]   # extended
    clock.enter("idle")
    third = clock.pending()
    assert [(r["cause"], r["id"]) for _, _, r in third] == [("breaker", 11), ("idle", None)]


def test_a_change_while_being_written_is_written_again():
    clock = LaneClock()
    clock.enter("idle")
    time.sleep(0.01)
    clock.enter("generating", new=True)
    time.sleep(0.08)                 # longer than a hand-over (lane_clock.HANDOVER_S)
    batch = clock.pending()
    clock.took("loading", 0.005)     # changes the ended 'generating' after the snapshot
    clock.written([(i, v, n) for n, (i, v, _) in enumerate(batch, start=1)])
    again = [r for _, _, r in clock.pending()]
    assert ("generating", 2) in [(r["cause"], r["id"]) for r in again]


def test_a_disabled_clock_records_nothing():
    clock = LaneClock(enabled=False)
    clock.enter("idle")
    clock.took("loading", 1.0)
    clock.finish()
    assert clock.pending() == []


def test_unknown_causes_are_refused():
    with pytest.raises(ValueError):
        LaneClock().enter("napping")
