"""GBNF grammars as llama.cpp reads them, in Python: `Grammar` parses a grammar's
text into flat elements (literals as single characters, groups and repetitions
as generated rules, as llama.cpp's parser does) and steps a set of grammar stacks
over a character (as `llama-grammar.cpp` does), for `forced.Recognizer`.
`canonical_whitespace` gives a schema grammar one whitespace layout
(docs/adr/0007-jump-forward.md).

A `Grammar`'s stack tables are shared by the recognizers of one model (one per
generation) and guarded by its lock.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from ..errors import InternalError

# Element kinds of the flattened grammar (as llama.cpp's LLAMA_GRETYPE_*).
END, CHR, REF = 0, 1, 2
# A grammar whose stacks grow past this is not followed (left recursion, or a
# grammar far bigger than a schema's): jumping is then off for that generation.
MAX_NODES = 200_000


class GrammarError(InternalError):
    """The grammar text could not be parsed, or its stacks grow without bound: jumping
    is then off (llama.cpp's own grammar still constrains the answer)."""


# ---------------------------------------------------------------- canonical layout

_SPACE_RULE = re.compile(r"^space ::= .*$", re.MULTILINE)
_SPACE_REF = r"(?<![\w-])space(?![\w-])"


def canonical_whitespace(gbnf: str) -> str:
    """The schema grammar with fixed separators: ``": "`` between a key and its value
    and ``", "`` between items and members, as json.dumps and the models write them,
    and nothing after the answer's last character. llama-cpp-python's converter
    writes an optional space (`space`) after every literal and value; the space
    after an opening bracket and after a value (before a comma or a closing
    bracket) stays the model's choice: Gemma-3-270M writes ``[ "a", "b" ]``, and
    forbidding that space made it write ``[".", "id_id_id...`` in 4 of 11 of
    workflow 3001's extractions (docs/adr/0007-jump-forward.md). Keys are forced
    once their opening quote is written, and so is everything from a comma to the
    next value. Rules named otherwise (a property called "space" becomes
    ``space0``, ``space-kv``) are left alone."""
    if not _SPACE_RULE.search(gbnf):
        return gbnf
    out = re.sub(_SPACE_REF + r' ":" ' + _SPACE_REF, '": "', gbnf)
    out = re.sub(r'":" ' + _SPACE_REF, '": "', out)
    out = re.sub(r'"," ' + _SPACE_REF, '", "', out)
    return _ROOT_TAIL.sub(r"\1", out, count=1)


# The root rule's last `space`: a space after the whole answer, which only costs the
# model one more sampling before its end-of-generation token.
_ROOT_TAIL = re.compile(r"^(root ::= .*) " + _SPACE_REF + r"$", re.MULTILINE)


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
        try:
            parser.parse()
        except RecursionError as exc:
            # Groups nest as deep as a schema's bounds: the converter writes
            # maxLength 800 as 800 nested optional groups, deeper than Python's
            # stack, while llama.cpp's own parser reads it.
            raise GrammarError("the grammar nests too deep to follow") from exc
        except (IndexError, ValueError) as exc:
            raise GrammarError(f"the grammar could not be parsed: {exc}") from exc
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
        # The batch engine's callers create their samplers (and so start a
        # recognizer) on their own threads while its loop steps others.
        self.lock = threading.Lock()

    @property
    def full(self) -> bool:
        """Whether its stack tables reached MAX_NODES: a recognizer stepping
        anywhere new is then lost."""
        return len(self.nodes) >= MAX_NODES

    def matches(self, pos: int, cp: int) -> bool:
        ranges, negated = self.arg[pos]
        hit = any(lo <= cp <= hi for lo, hi in ranges)
        return hit != negated

    # -- stacks, shared by every recognizer of this grammar (under its lock)
    def start(self) -> frozenset[int]:
        out: set[int] = set()
        with self.lock:
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
        with self.lock:
            return self._step(stacks, ch, key)

    def _step(self, stacks: frozenset[int], ch: str,
              key: tuple[frozenset[int], str]) -> frozenset[int]:
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
