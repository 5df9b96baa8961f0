"""Jump-forward decoding: the text a GBNF grammar forces next, and the tokens that
may be added for it without sampling (docs/adr/0007-jump-forward.md).

`Recognizer` follows a GBNF grammar character by character the way llama.cpp's
grammar does (a set of stacks of grammar positions; `llama-grammar.cpp`): it is
parsed from the grammar's text, so it knows nothing of JSON or of any schema.
`Recognizer.forced` is the longest text that every stack allows, one same single
character at a time, while no stack can end: every answer the grammar admits
from here continues with it.

`canonical_whitespace` gives a schema grammar one fixed layout (json.dumps'
``{"a": 1, "b": [1, 2]}``), so that keys, ``": "`` and ``", "`` are forced.

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
import re
from collections.abc import Sequence
from typing import Any

# Element kinds of the flattened grammar (as llama.cpp's LLAMA_GRETYPE_*).
END, CHR, REF = 0, 1, 2
# The most characters one forced span follows (a const or an enum value is shorter).
FORCED_CHARS_MAX = 256
# A grammar whose stacks grow past this is not followed (left recursion, or a
# grammar far bigger than a schema's): jumping is then off for that generation.
MAX_NODES = 200_000


class GrammarError(ValueError):
    """The grammar text could not be parsed by this recognizer."""


# ---------------------------------------------------------------- canonical layout

_SPACE_RULE = re.compile(r"^space ::= .*$", re.MULTILINE)
_SPACE_REF = r"(?<![\w-])space(?![\w-])"


def canonical_whitespace(gbnf: str) -> str:
    """The schema grammar with one whitespace layout, json.dumps' default: ``", "``
    between items and members, ``": "`` after a key, nothing else. llama-cpp-python's
    converter writes an optional space (`space`) after every literal and value;
    here `space` admits nothing, and its separators ``"," space`` and ``":" space``
    become ``", "`` and ``": "``. Rules named otherwise (a property called "space"
    becomes ``space0``, ``space-kv``) are left alone."""
    if not _SPACE_RULE.search(gbnf):
        return gbnf
    out = re.sub(r'"," ' + _SPACE_REF, '", "', gbnf)
    out = re.sub(r'":" ' + _SPACE_REF, '": "', out)
    return _SPACE_RULE.sub('space ::= ""', out, count=1)


# ---------------------------------------------------------------- parsing

class _Parser:
    """GBNF text -> flat elements, as llama.cpp's grammar parser does: literals become
    single-character elements, groups and repetitions become generated rules."""

    def __init__(self, text: str):
        self.src = text
        self.i = 0
        self.names: dict[str, int] = {}
        self.rules: list[list[list[tuple]] | None] = []

    def rule_id(self, name: str) -> int:
        if name not in self.names:
            self.names[name] = len(self.rules)
            self.rules.append(None)
        return self.names[name]

    def new_rule(self, alts: list[list[tuple]]) -> int:
        self.rules.append(alts)
        return len(self.rules) - 1

    # -- lexing
    def skip(self, newline_ok: bool) -> None:
        src = self.src
        while self.i < len(src):
            c = src[self.i]
            if c == "#":
                while self.i < len(src) and src[self.i] not in "\r\n":
                    self.i += 1
            elif c in " \t" or (newline_ok and c in "\r\n"):
                self.i += 1
            else:
                return

    def name(self) -> str:
        m = re.compile(r"[a-zA-Z0-9-]+").match(self.src, self.i)
        if not m:
            raise GrammarError(f"expected a name at {self.i}")
        self.i = m.end()
        return m.group(0)

    def char(self) -> int:
        """One (possibly escaped) character of a literal or a class."""
        src, i = self.src, self.i
        if src[i] != "\\":
            self.i = i + 1
            return ord(src[i])
        esc = src[i + 1]
        sizes = {"x": 2, "u": 4, "U": 8}
        if esc in sizes:
            n = sizes[esc]
            self.i = i + 2 + n
            return int(src[i + 2:i + 2 + n], 16)
        self.i = i + 2
        simple = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]"}
        if esc not in simple:
            raise GrammarError(f"unknown escape \\{esc}")
        return ord(simple[esc])

    # -- grammar
    def parse(self) -> None:
        self.skip(True)
        while self.i < len(self.src):
            name = self.name()
            self.skip(False)
            if not self.src.startswith("::=", self.i):
                raise GrammarError(f"expected ::= after {name}")
            self.i += 3
            self.skip(True)
            rid = self.rule_id(name)
            self.rules[rid] = self.alternatives(nested=False)
            self.skip(True)
        missing = [n for n, r in self.names.items() if self.rules[r] is None]
        if missing:
            raise GrammarError(f"undefined rules: {missing}")

    def alternatives(self, nested: bool) -> list[list[tuple]]:
        alts = [self.sequence(nested)]
        while self.i < len(self.src) and self.src[self.i] == "|":
            self.i += 1
            self.skip(True)
            alts.append(self.sequence(nested))
        return alts

    def sequence(self, nested: bool) -> list[tuple]:
        seq: list[tuple] = []
        last_start = 0
        src = self.src
        while self.i < len(src):
            c = src[self.i]
            if c == '"':
                self.i += 1
                last_start = len(seq)
                while src[self.i] != '"':
                    cp = self.char()
                    seq.append((CHR, ((cp, cp),), False))
                self.i += 1
            elif c == "[":
                self.i += 1
                negated = src[self.i] == "^"
                if negated:
                    self.i += 1
                ranges = []
                while src[self.i] != "]":
                    lo = self.char()
                    hi = lo
                    if src[self.i] == "-" and src[self.i + 1] != "]":
                        self.i += 1
                        hi = self.char()
                    ranges.append((lo, hi))
                self.i += 1
                last_start = len(seq)
                seq.append((CHR, tuple(ranges), negated))
            elif c == ".":
                self.i += 1
                last_start = len(seq)
                seq.append((CHR, ((0, 0x10FFFF),), False))
            elif c == "(":
                self.i += 1
                self.skip(True)
                sub = self.alternatives(nested=True)
                if self.i >= len(src) or src[self.i] != ")":
                    raise GrammarError("expected )")
                self.i += 1
                last_start = len(seq)
                seq.append((REF, self.new_rule(sub)))
            elif re.match(r"[a-zA-Z0-9-]", c):
                name = self.name()
                last_start = len(seq)
                seq.append((REF, self.rule_id(name)))
            elif c in "*+?{":
                if not seq:
                    raise GrammarError(f"{c} without an element before it")
                last = seq[last_start:]
                del seq[last_start:]
                least, most = self.repetition()
                seq.extend(self.repeat(last, least, most))
            else:
                break
            self.skip(nested)
        return seq

    def repetition(self) -> tuple[int, int | None]:
        c = self.src[self.i]
        self.i += 1
        if c == "*":
            return 0, None
        if c == "+":
            return 1, None
        if c == "?":
            return 0, 1
        m = re.compile(r"\s*(\d+)\s*(,\s*(\d*)\s*)?}").match(self.src, self.i)
        if not m:
            raise GrammarError("bad {m,n}")
        self.i = m.end()
        lo = int(m.group(1))
        if m.group(2) is None:
            return lo, lo
        return lo, int(m.group(3)) if m.group(3) else None

    def repeat(self, item: list[tuple], lo: int, hi: int | None) -> list[tuple]:
        """item{lo,hi} as elements and generated rules (llama.cpp's handle_repetitions)."""
        out = item * lo
        if hi is None:
            star = self.new_rule([])
            self.rules[star] = [[*item, (REF, star)], []]
            return [*out, (REF, star)]
        tail: list[tuple] = []
        for _ in range(hi - lo):
            opt = self.new_rule([[*item, *tail], []])
            tail = [(REF, opt)]
        return out + tail


# ---------------------------------------------------------------- recognizer

class Grammar:
    """A parsed GBNF grammar, flattened the way llama.cpp stores it: each alternative
    is a run of elements ending in END, and a grammar position is an index."""

    def __init__(self, text: str, root: str = "root"):
        parser = _Parser(text)
        parser.parse()
        if root not in parser.names:
            raise GrammarError(f"no rule {root!r}")
        self.kind: list[int] = []
        self.arg: list[Any] = []          # REF: rule id; CHR: (ranges, negated)
        self.single: list[str | None] = []  # CHR of exactly one character: it
        self.starts: list[list[int]] = []   # per rule: the position of each alternative
        for alts in parser.rules:
            assert alts is not None
            starts = []
            for alt in alts:
                starts.append(len(self.kind))
                for el in alt:
                    self.kind.append(el[0])
                    if el[0] == REF:
                        self.arg.append(el[1])
                        self.single.append(None)
                    else:
                        ranges, negated = el[1], el[2]
                        self.arg.append((ranges, negated))
                        one = (not negated and len(ranges) == 1
                               and ranges[0][0] == ranges[0][1])
                        self.single.append(chr(ranges[0][0]) if one else None)
                self.kind.append(END)
                self.arg.append(None)
                self.single.append(None)
            self.starts.append(starts)
        self.root = parser.names[root]
        # Stacks are interned cons lists (id -> (position, parent id); 0 is the
        # empty stack, which means the text may end there), so a set of stacks is a
        # frozenset of ints, and expansions and steps are cached.
        self.nodes: list[tuple[int, int]] = [(-1, -1)]
        self.ids: dict[tuple[int, int], int] = {}
        self.expanded: dict[int, frozenset[int]] = {}
        self.stepped: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def matches(self, pos: int, cp: int) -> bool:
        ranges, negated = self.arg[pos]
        hit = any(lo <= cp <= hi for lo, hi in ranges)
        return hit != negated

    # -- stacks, shared by every recognizer of this grammar (one thread at a time)
    def start(self) -> frozenset[int]:
        out: set[int] = set()
        for pos in self.starts[self.root]:
            out |= self._expand(self._push(pos, 0))
        return frozenset(out)

    def _push(self, pos: int, parent: int) -> int:
        if self.kind[pos] == END:
            return parent
        key = (pos, parent)
        sid = self.ids.get(key)
        if sid is None:
            if len(self.nodes) >= MAX_NODES:
                raise GrammarError("the grammar's stacks grow without bound")
            sid = len(self.nodes)
            self.nodes.append(key)
            self.ids[key] = sid
        return sid

    def _expand(self, sid: int) -> frozenset[int]:
        """The stacks reachable from sid without reading a character whose top is a
        character element, and 0 if the text may end."""
        done = self.expanded.get(sid)
        if done is not None:
            return done
        out: set[int] = set()
        todo, seen = [sid], set()
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            if s == 0:
                out.add(0)
                continue
            pos, parent = self.nodes[s]
            if self.kind[pos] == CHR:
                out.add(s)
                continue
            cont = self._push(pos + 1, parent)          # what follows the reference
            for start in self.starts[self.arg[pos]]:
                todo.append(self._push(start, cont))
        result = frozenset(out)
        self.expanded[sid] = result
        return result

    def step(self, stacks: frozenset[int], ch: str) -> frozenset[int]:
        """The stacks after reading ch (empty: the grammar does not allow it)."""
        key = (stacks, ch)
        done = self.stepped.get(key)
        if done is not None:
            return done
        cp = ord(ch)
        out: set[int] = set()
        for s in stacks:
            if s == 0:
                continue
            pos, parent = self.nodes[s]
            if self.matches(pos, cp):
                out |= self._expand(self._push(pos + 1, parent))
        result = frozenset(out)
        if len(self.stepped) < MAX_NODES:
            self.stepped[key] = result
        return result

    def top(self, sid: int) -> int:
        return self.nodes[sid][0]


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
        if byte < 0x80:
            return bool(self._step(stacks, chr(byte)))
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
        self._buf = (__import__("ctypes").c_char * 256)()

    def piece(self, token: int) -> bytes:
        got = self._pieces.get(token)
        if got is None:
            n = self.lc.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0,
                                             True)
            got = bytes(self._buf[:max(n, 0)])
            self._pieces[token] = got
        return got

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
            self._sorted = sorted({self.piece(t) for t in range(self.n_vocab)})
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
    return seam_tokens(pieces, recognizer, text, after)[:limit]


def follow(recognizer: Recognizer, texts: Sequence[str]) -> None:
    """Advances over each text in turn (tests and tools)."""
    for t in texts:
        recognizer.accept_text(t)
