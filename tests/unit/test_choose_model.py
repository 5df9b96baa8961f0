"""Which model the model lane works on next (interpreter.model_lane.choose_model)."""

from __future__ import annotations

from interpreter.model_lane import choose_model


def test_stays_on_the_loaded_model_while_it_has_work():
    assert choose_model("a", {"a": 10, "b": 39}, switch_ratio=4.0) == "a"
    assert choose_model("a", {"a": 10, "b": 40}, switch_ratio=4.0) == "a"  # not *more* than 4x


def test_switches_when_another_backlog_is_switch_ratio_times_larger():
    assert choose_model("a", {"a": 10, "b": 41}, switch_ratio=4.0) == "b"
    assert choose_model("a", {"a": 10, "b": 11}, switch_ratio=1.0) == "b"


def test_switches_when_the_loaded_model_has_no_work():
    assert choose_model("a", {"b": 1, "c": 5}, switch_ratio=4.0) == "c"


def test_nothing_loaded_takes_the_largest_backlog():
    assert choose_model(None, {"a": 3, "b": 7, "c": 5}, switch_ratio=4.0) == "b"


def test_a_tie_is_broken_by_name_so_every_worker_agrees():
    assert choose_model(None, {"a": 5, "b": 5}, switch_ratio=4.0) == "b"
