"""The workflow ETA: from the per-step velocities, and from the rate at which subjects
finish once some have."""

from __future__ import annotations

import pytest

from interpreter.ops.status import estimate_eta_from_velocities, workflow_eta


def step(number: int, waiting: int = 0, leased: int = 0, velocity: float = 0.0,
         state: str = "idle", stalled: bool = False) -> dict:
    return {"step": number, "waiting": waiting, "leased": leased, "velocity_per_min": velocity,
            "state": state, "stalled": stalled}


def test_checkpoints_to_come_over_the_rate_of_all_steps():
    steps = [step(1, velocity=4.0), step(2, waiting=3, velocity=2.0, state="running"),
             step(3, leased=5, state="running"), step(4)]
    # 3 subjects at step 2 have 3 steps to go, 5 at step 3 have 2: 19 checkpoints at 6/min
    assert estimate_eta_from_velocities(steps) == pytest.approx(19 * 60 / 6.0)


def test_step_order_comes_from_the_step_numbers_not_the_list():
    steps = [step(10, leased=2, state="running"), step(1, velocity=3.0), step(2)]
    assert estimate_eta_from_velocities(steps) == pytest.approx(2 * 60 / 3.0)


def test_unknown_when_nothing_moves():
    assert estimate_eta_from_velocities([step(1, waiting=4, state="waiting"), step(2)]) is None


@pytest.mark.parametrize("held", [{"state": "stalled", "stalled": True},
                                  {"state": "breaker open"}, {"state": "paused"}])
def test_unknown_while_a_step_with_work_is_held_up(held):
    steps = [step(1, velocity=5.0), step(2, waiting=4, **held)]
    assert estimate_eta_from_velocities(steps) is None


def test_a_held_up_step_without_work_does_not_matter():
    steps = [step(1, waiting=2, velocity=5.0, state="running"), step(2, state="breaker open")]
    assert estimate_eta_from_velocities(steps) == pytest.approx(2 * 2 * 60 / 5.0)


def test_the_first_finishers_do_not_make_the_eta_jump():
    # 16 subjects one step from the end of a 23-step pipeline, moving fast; 6 have
    # just finished, so over the run so far subjects finish at 1.7 a minute
    steps = [step(i, velocity=4.0) for i in range(1, 21)] + \
        [step(21, waiting=16, velocity=20.0, state="running"), step(22), step(23)]
    assert workflow_eta(16, 1.7, steps) == round(16 * 3 * 60 / 100.0)     # not 565 s


def test_in_a_steady_stream_the_finishing_rate_is_used_when_it_says_sooner():
    # gates end most subjects early: the velocities count steps they will skip
    steps = [step(1, waiting=10, velocity=10.0, state="running"), step(2), step(3), step(4)]
    assert workflow_eta(10, 10.0, steps) == pytest.approx(60.0)


def test_the_finishing_rate_stands_alone_while_a_step_is_held_up():
    steps = [step(1, velocity=5.0), step(2, waiting=4, state="paused")]
    assert workflow_eta(4, 2.0, steps) == pytest.approx(120.0)
    assert workflow_eta(0, 2.0, steps) == 0.0
