"""Prompt-lookup drafting: proposing the tokens an answer is likely to copy
(`LookupDrafter`), and measuring whether checking such drafts pays on this
machine (`DraftGain`). The sequential decoder (`decode.LlamaDecoder`) verifies
every drafted token, so a draft changes the speed, never the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Prompt-lookup drafting (see `LookupDrafter`): the most tokens proposed at once by
# default (a model's sampling may set `lookup_tokens`, up to LOOKUP_MAX), and the
# n-gram lengths that are looked up (longest first). Verifying k drafted tokens
# costs one decode of k + 1 tokens, which on a CPU costs more than one token's
# decode and grows with k (faster for a small output layer than for Gemma's
# 262,144 entries, which run per row): short drafts gained most on 3001's Extract
# prompts (docs/benchmarks.md, Drafting by prompt lookup).
LOOKUP_TOKENS = 2
LOOKUP_MAX = 16
LOOKUP_NGRAMS = (4, 3, 2)
# Answers of one grammar kept as lookup text for the next calls with that grammar:
# a schema's keys and punctuation come back in every answer.
LOOKUP_ANSWERS_KEPT = 8
# Whether drafting pays is measured, not assumed: on some CPUs drafts make free-text
# answers slower (docs/benchmarks.md). DraftGain decides per kind of answer after
# this many steps of each kind, and when it has turned drafting off, still drafts
# one available draft in DRAFT_PROBE_EVERY to notice when it pays again, twice as
# rarely after each probe that finds it still does not (up to one in
# DRAFT_PROBE_MAX), so that the probes cost about a step each and rarely.
DRAFT_MIN_STEPS = 8
DRAFT_PROBE_EVERY = 16
DRAFT_PROBE_MAX = 512
DRAFT_EWMA = 0.1


def lookup_tokens(sampling: dict[str, Any]) -> int:
    """How many tokens a local model drafts at once by prompt lookup (the sampling's
    ``lookup_tokens``; 0 turns drafting off). A value that is not a whole number
    counts as the default: drafting changes how fast the model's picks are made,
    not which token it picks (up to floating-point near-ties, see `decode`)."""
    value = sampling.get("lookup_tokens", LOOKUP_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int):
        return LOOKUP_TOKENS
    return max(0, min(LOOKUP_MAX, value))


@dataclass
class DraftGain:
    """Whether prompt-lookup drafting makes one kind of answer (one grammar) faster
    on this machine: the time per token of a step that checks a draft (a wider
    decode, gaining the kept drafted tokens and the pick after them) against that
    of a plain one-token step, both as moving averages."""

    single_s: float = 0.0       # seconds per one-token step
    verify_s: float = 0.0       # seconds per draft-checking step
    verify_tokens: float = 0.0  # tokens a draft-checking step adds to the answer
    singles: int = 0
    verifies: int = 0
    skipped: int = 0            # drafts not checked because drafting did not pay
    probe_every: int = DRAFT_PROBE_EVERY
    since_probe: int = 0

    def record_single(self, seconds: float) -> None:
        self.single_s = _moving(self.single_s, seconds, self.singles)
        self.singles += 1

    def record_verify(self, seconds: float, tokens: int) -> None:
        self.verify_s = _moving(self.verify_s, seconds, self.verifies)
        self.verify_tokens = _moving(self.verify_tokens, float(tokens), self.verifies)
        self.verifies += 1

    def pays(self) -> bool:
        """Until both kinds of step were measured enough: yes (drafting is the default)."""
        if self.singles < DRAFT_MIN_STEPS or self.verifies < DRAFT_MIN_STEPS:
            return True
        return self.verify_s / max(self.verify_tokens, 1.0) <= self.single_s

    def wants_draft(self) -> bool:
        """Whether to check a draft that is available now: when drafting pays, and
        now and then when it does not, to keep measuring it. Where drafts come at
        nearly every step, plain steps are taken on purpose until there are
        enough of them to compare."""
        if self.verifies >= DRAFT_MIN_STEPS and self.singles < DRAFT_MIN_STEPS:
            return False
        if self.pays():
            self.probe_every, self.since_probe = DRAFT_PROBE_EVERY, 0
            return True
        self.since_probe += 1
        if self.since_probe < self.probe_every:
            self.skipped += 1
            return False
        self.since_probe = 0
        self.probe_every = min(2 * self.probe_every, DRAFT_PROBE_MAX)
        return True


def _moving(mean: float, value: float, seen: int) -> float:
    return value if seen == 0 else mean + DRAFT_EWMA * (value - mean)


class LookupDrafter:
    """Proposes the tokens that followed the latest occurrence of the last few tokens,
    in the text the answer is likely to copy: recent answers under the same grammar,
    the prompt, and the answer so far (later text wins a tie).

    This is llama.cpp's prompt-lookup drafting (`examples/lookup`): an extraction
    answer copies names, titles and phrases from its prompt, and a JSON answer
    repeats its schema's keys. The model verifies every drafted token (see
    `LlamaDecoder`), so a draft changes the speed, never the answer."""

    def __init__(self, answers: Sequence[Sequence[int]], prompt: Sequence[int], limit: int):
        """answers: earlier answers under the same grammar; the answer being generated
        continues the prompt, and is `add`ed token by token as it is accepted."""
        self.limit = limit
        self.tokens: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}
        for answer in answers:
            self.add(answer)
            self.tokens.append(-1)      # no n-gram or draft runs from one text into the next
        self.add(prompt)

    def add(self, tokens: Sequence[int]) -> None:
        """Appends tokens. Each n-gram is indexed when the token after it arrives,
        pointing at that token: the n-gram the text now ends with is not indexed
        yet, so a lookup of it finds an earlier occurrence, not itself."""
        seq, index = self.tokens, self.index
        for token in tokens:
            at = len(seq)
            for n in LOOKUP_NGRAMS:
                if at >= n:
                    index[tuple(seq[at - n:at])] = at
            seq.append(int(token))

    def propose(self, room: int) -> list[int]:
        """Up to min(limit, room) tokens expected next (empty: no earlier occurrence of
        the last n tokens, for any n of LOOKUP_NGRAMS)."""
        size = min(self.limit, room)
        if size <= 0:
            return []
        seq = self.tokens
        for n in LOOKUP_NGRAMS:
            start = self.index.get(tuple(seq[-n:]))
            if start is None:
                continue
            draft = []
            for token in self.tokens[start:start + size]:
                if token < 0:
                    break
                draft.append(token)
            if draft:
                return draft
        return []
