"""Prompt-lookup drafting: what LookupDrafter proposes, and when DraftGain says drafting
pays (pure; no model)."""

from __future__ import annotations

from interpreter.llm.drafting import DRAFT_MIN_STEPS, DRAFT_PROBE_EVERY, DraftGain, LookupDrafter


def test_proposes_what_followed_the_last_tokens_in_the_prompt():
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 3]
    drafter = LookupDrafter([], prompt, limit=3)
    # The text ends "... 2 3"; earlier, "2 3" was followed by "4 5 6".
    assert drafter.propose(room=10) == [4, 5, 6]
    assert drafter.propose(room=2) == [4, 5]


def test_the_answer_so_far_is_part_of_the_text_and_never_matches_itself():
    drafter = LookupDrafter([], [10, 11, 12], limit=4)
    assert drafter.propose(room=4) == []            # "11 12" occurred only once
    drafter.add([13, 11, 12])
    assert drafter.propose(room=4) == [13, 11, 12]  # after the first "11 12" came 13


def test_longer_matches_win_and_later_text_wins_a_tie():
    prompt = [5, 6, 7, 9, 1, 6, 7, 8, 4, 5, 6, 7]
    drafter = LookupDrafter([], prompt, limit=1)
    # "5 6 7" occurred at the start (followed by 9); "6 7" also later (followed by 8).
    assert drafter.propose(room=1) == [9]
    drafter2 = LookupDrafter([], [1, 6, 7, 8, 2, 6, 7, 3, 0, 6, 7], limit=1)
    assert drafter2.propose(room=1) == [3]


def test_earlier_answers_feed_drafts_but_no_draft_runs_across_two_texts():
    answers = [[40, 41, 42], [50, 51]]
    drafter = LookupDrafter(answers, [99, 40, 41], limit=5)
    assert drafter.propose(room=5) == [42]          # stops where that answer ended
    drafter = LookupDrafter([[7, 8]], [1, 2], limit=3)
    drafter.add([7, 8])
    assert drafter.propose(room=3) == []            # after "7 8" came the end of a text


def test_no_room_no_draft():
    drafter = LookupDrafter([], [1, 2, 3, 1, 2], limit=4)
    assert drafter.propose(room=0) == []


# ---------------------------------------------------------------- whether it pays

def measured(single_s: float, verify_s: float, tokens: int, steps: int = DRAFT_MIN_STEPS):
    gain = DraftGain()
    for _ in range(steps):
        gain.record_single(single_s)
        gain.record_verify(verify_s, tokens)
    return gain


def test_drafting_is_on_until_both_kinds_of_step_are_measured():
    gain = measured(0.010, 0.100, 1, steps=DRAFT_MIN_STEPS - 1)
    assert gain.pays() and gain.wants_draft()


def test_plain_steps_are_taken_on_purpose_to_have_something_to_compare():
    # drafts at every step: after enough checks, plain steps until they are measured
    gain = DraftGain()
    for _ in range(DRAFT_MIN_STEPS):
        assert gain.wants_draft()
        gain.record_verify(0.060, 3)
    assert not gain.wants_draft()
    for _ in range(DRAFT_MIN_STEPS):
        gain.record_single(0.014)
    assert not gain.pays() and not gain.wants_draft()    # 20 ms a token against 14


def test_drafts_that_gain_more_than_they_cost_pay():
    # a check of 2 drafted tokens costs 1.3 steps and adds 2 tokens: 0.65 step each
    assert measured(0.020, 0.026, 2).pays()


def test_drafts_that_are_mostly_rejected_do_not_pay_and_are_probed_now_and_then():
    # a wider decode (1.3 steps) that keeps nothing: each token costs 1.3 steps
    gain = measured(0.020, 0.026, 1)
    assert not gain.pays()
    wanted = [gain.wants_draft() for _ in range(7 * DRAFT_PROBE_EVERY)]
    # probes at 16, then 32 later, then 64 later: twice as rare each time
    probes = [i + 1 for i, w in enumerate(wanted) if w]
    assert probes == [DRAFT_PROBE_EVERY, 3 * DRAFT_PROBE_EVERY, 7 * DRAFT_PROBE_EVERY]


def test_drafting_comes_back_when_its_drafts_start_to_pay():
    gain = measured(0.020, 0.026, 1)
    for _ in range(30):        # the probes' drafts are now kept
        gain.record_verify(0.026, 3)
    assert gain.pays()
