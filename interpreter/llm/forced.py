"""Jump-forward decoding: the text a GBNF grammar forces next, and the tokens that
may be added for it without sampling (docs/adr/0007-jump-forward.md).

`Recognizer` follows a grammar (`gbnf.Grammar`, parsed from the grammar's text,
so it knows nothing of JSON or of any schema) character by character the way
llama.cpp's grammar does: a set of stacks of grammar positions. `Recognizer.forced`
is the longest text that every stack allows, one same single character at a
time, while no stack can end: every answer the grammar admits from here
continues with it.

`TokenPieces` knows each token's text (as llama.cpp's grammar sees it) and which
texts a longer token extends, for the seam between forced and free text: a
forced token that a longer token could extend into free text is left to the
sampler (`seam_tokens`).

Not thread-safe: one `Recognizer` per generation; the `TokenPieces` of a model
is shared by its samplers, which sample one at a time (see `token_sampling`).
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
from typing import Any

from .gbnf import Grammar, GrammarError

# The most characters one forced span follows (a const or an enum value is shorter).
FORCED_CHARS_MAX = 256


class Recognizer:
    """Follows a grammar over the bytes of accepted tokens; says what it forces next.
    Its state is a set of stacks of the grammar (`Grammar.step`)."""

    def __init__(self, grammar: Grammar):
        self.g = grammar
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.lost = False           # the text left the grammar: nothing is forced any more
        self.stacks = grammar.start()

    def _step(self, stacks: frozenset[int], ch: str) -> frozenset[int]:
        return self.g.step(stacks, ch)

    # -- following text
    def accept_bytes(self, data: bytes) -> None:
        """Advances over the bytes of an accepted token (a character split across
        tokens is read when its last byte comes)."""
        if self.lost:
            return
        try:
            text = self.decoder.decode(data)
        except UnicodeDecodeError:
            self.lost = True
            return
        self.accept_text(text)

    def accept_text(self, text: str) -> None:
        stacks = self.stacks
        try:
            for ch in text:
                stacks = self._step(stacks, ch)
                if not stacks:
                    self.lost = True
                    return
        except GrammarError:
            self.lost = True
            return
        self.stacks = stacks

    def allows(self, ch: str) -> bool:
        return bool(self._step(self.stacks, ch))

    @property
    def mid_character(self) -> bool:
        return bool(self.decoder.getstate()[0])

    def must_end(self) -> bool:
        """Whether the grammar admits nothing more: the text is complete."""
        return not self.lost and not self.mid_character and self.stacks == frozenset((0,))

    def forced(self, limit: int = FORCED_CHARS_MAX) -> tuple[str, frozenset[int]]:
        """The longest text every continuation starts with, and the stacks after it
        (empty text: the next character is not forced, or the text may end here)."""
        if self.lost or self.mid_character:
            return "", self.stacks
        out: list[str] = []
        stacks = self.stacks
        single = self.g.single
        try:
            while len(out) < limit and stacks and 0 not in stacks:
                chars = {single[self.g.top(s)] for s in stacks}
                if len(chars) != 1:
                    break
                ch = chars.pop()
                if ch is None:
                    break
                stacks = self._step(stacks, ch)
                out.append(ch)
        except GrammarError:
            return "", self.stacks
        return "".join(out), stacks

    def allows_after(self, stacks: frozenset[int], byte: int) -> bool:
        """Whether, from stacks, the grammar allows a character starting with this
        byte (a multi-byte character's lead byte: yes when any non-ASCII one is)."""
        try:
            if byte < 0x80:
                return bool(self._step(stacks, chr(byte)))
        except GrammarError:
            # The grammar's shared stack tables are full (`gbnf.MAX_NODES`): stop
            # following it; "allowed" keeps the seam's tokens to the sampler.
            self.lost = True
            return True
        g = self.g
        for s in stacks:
            if s == 0:
                continue
            ranges, negated = g.arg[g.top(s)]
            if negated or any(hi >= 0x80 for _, hi in ranges):
                return True
        return False


# ---------------------------------------------------------------- tokens at the seam

class TokenPieces:
    """A model's token texts as llama.cpp's grammar reads them, and the sorted texts
    (built on first use) to ask whether a longer token extends a text."""

    def __init__(self, llama: Any):
        import llama_cpp.llama_cpp as lc

        self.lc = lc
        self.llama = llama
        self.vocab = lc.llama_model_get_vocab(llama.model)
        self.n_vocab = int(llama.n_vocab())
        self._pieces: dict[int, bytes] = {}
        self._sorted: list[bytes] | None = None
        self._buf = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> bytes:
        got = self._pieces.get(token)
        if got is None:
            n = self.lc.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0,
                                             True)
            got = ctypes.string_at(self._buf, max(n, 0))
            self._pieces[token] = got
        return got

    def _all_sorted(self) -> list[bytes]:
        """Every token's text, sorted, once per model (about a second for Gemma 3's
        262,144 tokens on one core)."""
        to_piece, vocab, buf = self.lc.llama_token_to_piece, self.vocab, self._buf
        size, at = len(buf), ctypes.addressof(buf)
        texts = set()
        for t in range(self.n_vocab):
            n = to_piece(vocab, t, buf, size, 0, True)
            if n > 0:
                texts.add(ctypes.string_at(at, n))
        return sorted(texts)

    def tokenize(self, text: str) -> list[int] | None:
        """text as plain-text tokens (special=False), or None when their texts do not
        join back into exactly text (a tokenizer that adds a leading space, say)."""
        data = text.encode("utf-8")
        tokens = self.llama.tokenize(data, add_bos=False, special=False)
        if b"".join(self.piece(t) for t in tokens) != data:
            return None
        return [int(t) for t in tokens]

    def next_bytes(self, prefix: bytes) -> list[int]:
        """The bytes that follow prefix in the tokens strictly longer than it that
        start with it (at most 256 binary searches)."""
        if self._sorted is None:
            self._sorted = self._all_sorted()
        texts = self._sorted
        out = []
        i = bisect.bisect_right(texts, prefix)      # texts equal to prefix come before
        n = len(prefix)
        while i < len(texts) and texts[i].startswith(prefix):
            b = texts[i][n]
            out.append(b)
            if b == 0xFF:
                break
            i = bisect.bisect_left(texts, prefix + bytes([b + 1]), i)
        return out


def seam_tokens(pieces: TokenPieces, recognizer: Recognizer, text: str,
                after: frozenset[int]) -> list[int]:
    """The tokens to add for the forced text: its plain-text tokens, less the tail
    that a longer token could carry on into free text (left to the sampler, whose
    grammar still forces it). after: the recognizer's stacks at the end of text."""
    tokens = pieces.tokenize(text)
    if not tokens:
        return []
    texts = [pieces.piece(t) for t in tokens]
    # The earliest token boundary whose rest of the forced text a longer token
    # extends with a byte the grammar allows next: from there on, the sampler picks.
    keep = len(tokens)
    rest = b""
    for i in range(len(tokens) - 1, -1, -1):
        rest = texts[i] + rest
        if any(recognizer.allows_after(after, b) for b in pieces.next_bytes(rest)):
            keep = i
    return tokens[:keep]


def forced_tokens(pieces: TokenPieces, recognizer: Recognizer, limit: int) -> list[int]:
    """At most limit tokens the grammar forces next, safe at the seam (`seam_tokens`)."""
    if limit <= 0:
        return []
    text, after = recognizer.forced()
    if not text:
        return []
    tokens = seam_tokens(pieces, recognizer, text, after)[:limit]
    # Lost on the way (the grammar's tables filled up): the grammar alone decides.
    return [] if recognizer.lost else tokens
