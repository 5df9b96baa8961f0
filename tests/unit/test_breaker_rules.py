"""The breaker's rule: failed subjects over a window of the actor's last
subjects, settings from the actor's params."""

from __future__ import annotations

from interpreter.breaker import BreakerSettings, next_state, wave_marks

DEFAULT = BreakerSettings.of({}, threshold=5, cooldown_s=30.0)


def test_settings_come_from_the_actors_params_else_the_run():
    assert DEFAULT == BreakerSettings(5, 30.0, 10)
    own = BreakerSettings.of({"breaker_threshold": "3", "breaker_cooldown_s": 120,
                              "breaker_window": 4}, threshold=5, cooldown_s=30.0)
    assert own == BreakerSettings(3, 120.0, 4)
    # the window is never shorter than the threshold (it could never open)
    assert BreakerSettings.of({"breaker_threshold": 8, "breaker_window": 2}, 5, 30).window == 8


def test_a_streak_of_threshold_failed_subjects_opens_it():
    state, recent = None, ""
    for _ in range(4):
        state, recent = next_state(state, recent, 1, 0, DEFAULT)
        assert state == "closed"
    state, recent = next_state(state, recent, 1, 0, DEFAULT)
    assert (state, recent) == ("open", "FFFFF")


def test_waves_with_one_success_each_do_not_reset_a_mostly_failing_actor():
    state, recent = "closed", ""
    for _ in range(3):
        state, recent = next_state(state, recent, 3, 1, DEFAULT)  # 75% of subjects fail
    assert state == "open" and recent.count("F") >= 5


def test_an_actor_failing_now_and_then_stays_closed():
    state, recent = "closed", ""
    for _ in range(20):
        state, recent = next_state(state, recent, 1, 3, DEFAULT)  # 25% fail
        assert state == "closed"


def test_a_wave_larger_than_the_window_counts_with_its_failure_rate():
    assert wave_marks(99, 1, 10) == "F" * 10
    assert wave_marks(50, 50, 10).count("F") == 5
    assert wave_marks(2, 1, 10) == "SFF"
    state, recent = next_state("closed", "", 30, 70, DEFAULT)
    assert state == "closed" and len(recent) == 10


def test_half_open_probe_closes_with_a_fresh_window_or_reopens():
    assert next_state("half_open", "FFFFFFFFFF", 0, 1, DEFAULT) == ("closed", "")
    assert next_state("half_open", "FFFFF", 1, 0, DEFAULT)[0] == "open"
    # a probe with no verdict (neither an actor failure nor a success) re-opens
    assert next_state("half_open", "FFFFF", 0, 0, DEFAULT)[0] == "open"


def test_an_open_breaker_stays_open_until_successes_bring_failures_under_the_threshold():
    assert next_state("open", "FFFFF", 0, 0, DEFAULT) == ("open", "FFFFF")
    assert next_state("open", "FFFFF", 0, 1, DEFAULT)[0] == "open"     # 5 F in the window
    assert next_state("open", "FSSSSSFFFF", 0, 1, DEFAULT)[0] == "closed"  # 4 F left
