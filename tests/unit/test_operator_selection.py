"""The operator verbs' selection rules that need no database."""

from __future__ import annotations

import pytest

from interpreter.errors import InterpError
from interpreter.operator_actions import (
    VERBS,
    Selection,
    describe,
    error_pattern,
    given_text,
    parse_outcome_at,
    parse_statuses,
    parse_subjects,
)


def test_outcome_at_is_a_step_and_a_label():
    assert parse_outcome_at("12=unclear") == (12, "UNCLEAR")
    assert parse_outcome_at("20= PASS ") == (20, "PASS")
    for bad in ("12", "=PASS", "x=PASS", "12=", "12=not a label", "12=1ABC"):
        with pytest.raises(InterpError, match="STEP=OUTCOME"):
            parse_outcome_at(bad)


def test_statuses_are_checked_and_waiting_is_ready():
    assert parse_statuses(["dead,cancelled", "waiting", "dead"]) == ("dead", "cancelled", "ready")
    with pytest.raises(InterpError, match="'running'"):
        parse_statuses(["running"])


def test_an_empty_selection_option_is_refused_not_ignored():
    """`--subject "$IDS"` with IDS empty must not become no selection: for retry that
    is every dead letter of the workflow."""
    assert parse_subjects(["1, 2", "3"]) == ("1", "2", "3")
    for bad in ("", " ", ",", " , "):
        with pytest.raises(InterpError, match="names no subject"):
            parse_subjects(["1", bad])
    for bad in ("", ",", " "):
        with pytest.raises(InterpError, match="names no status"):
            parse_statuses([bad])
    assert given_text("--where", None) is None
    assert given_text("--where", "t.id = 1") == "t.id = 1"
    for bad in ("", "   "):
        with pytest.raises(InterpError, match="--where is empty"):
            given_text("--where", bad)


def test_error_like_without_a_percent_matches_anywhere():
    assert error_pattern("timed out") == "%timed out%"
    assert error_pattern("step 4:%") == "step 4:%"


def test_verbs_move_what_they_say():
    assert VERBS["retry"].default == ("dead",) and "cancelled" in VERBS["retry"].eligible
    assert "done" not in VERBS["cancel"].eligible and "done" in VERBS["rewind"].eligible
    assert not VERBS["retry"].needs_selection
    assert VERBS["rewind"].needs_selection and VERBS["cancel"].needs_selection


def test_selection_is_recorded_as_given():
    assert Selection().as_json() == {"all": True}
    sel = Selection(subjects=("1", "2"), step=3, outcome_at=(12, "UNCLEAR"), error_like="x",
                    statuses=("dead",), where="t.id > 1")
    assert sel.as_json() == {"subjects": ["1", "2"], "step": 3,
                             "outcome_at": {"step": 12, "outcome": "UNCLEAR"},
                             "error_like": "x", "status": ["dead"], "where": "t.id > 1"}
    assert not sel.is_empty() and Selection(everything=True).is_empty()


def test_describe_says_what_moved_and_what_was_skipped():
    done = {"verb": "cancel", "workflow": 7, "dry_run": False, "to_step": None, "matched": 5,
            "changed": 3, "skipped": 2, "action_id": 9, "sample": ["1", "2", "3"]}
    text = describe(done)
    assert text.startswith("cancel: moved 3 of 5 matching subject(s) in workflow 7, "
                           "2 skipped (held by a running wave) (action 9)")
    assert text.endswith("subjects: 1, 2, 3")
    dry = {"verb": "rewind", "workflow": 7, "dry_run": True, "to_step": 2, "matched": 4,
           "would_change": 4, "skipped": 0, "ineligible": 1, "eligible": ["done"],
           "sample": ["1"]}
    assert describe(dry).startswith("rewind to step 2 would move 4 of 4 matching subject(s)")
    assert describe(dry).endswith("subjects: 1 ...")
