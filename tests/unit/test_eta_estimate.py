"""The workflow ETA estimated from the per-step velocities (before any subject finished)."""

from __future__ import annotations

import pytest

from interpreter.monitor import estimate_eta_from_velocities


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
