"""docs/architecture.md's diagram is drawn from the code, and this test keeps it so.

The convention the diagram follows (and this parser reads):

- a box is ``ID["names (what it does)"]``: the words before the first `` (``,
  separated by `` · ``, name the modules it stands for, relative to
  ``interpreter``: ``wave_store`` is interpreter/wave_store.py, and a name
  ending in ``/`` (``ops/``, ``cli/``, ``llm/``) is a package with every module
  under it;
- ``subgraph ID["..."]`` ... ``end`` groups boxes; an arrow to (or from) the
  group stands for arrows to (or from) any box in it;
- an arrow is ``A --> B``, and ``A & B --> C`` is two arrows.

The test fails when a box names no module, when a module of the package is in
no box, when a drawn arrow is not an import (from some module of A to some
module of B), and when an import between two boxes is not drawn.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.test_architecture import imports_of, modules

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
BOX = re.compile(r'^\s*(\w+)\[\(?"([^"]*)"\)?\]')
SUBGRAPH = re.compile(r'^\s*subgraph\s+(\w+)')
NODE_REF = re.compile(r'^\s*(\w+)')
# The package's own door (its version) is no room.
OUTSIDE = {"interpreter"}


def diagram(text: str) -> str:
    match = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert match, "docs/architecture.md has no mermaid diagram"
    return match.group(1)


def parse(source: str) -> tuple[dict[str, list[str]], dict[str, set[str]],
                                 set[tuple[str, str]]]:
    """(box -> the names it lists, group -> its boxes, drawn arrows)."""
    boxes: dict[str, list[str]] = {}
    groups: dict[str, set[str]] = {}
    arrows: set[tuple[str, str]] = set()
    open_groups: list[str] = []
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith("%%") or line.startswith("flowchart"):
            continue
        if m := SUBGRAPH.match(line):
            open_groups.append(m.group(1))
            groups[m.group(1)] = set()
            continue
        if line == "end":
            open_groups.pop()
            continue
        sides = line.split("-->")
        for side in sides:
            for part in side.split("&"):
                part = part.strip()
                if m := BOX.match(part):
                    names = m.group(2).split(" (")[0]
                    boxes[m.group(1)] = [n.strip() for n in names.split("·") if n.strip()]
                    for g in open_groups:
                        groups[g].add(m.group(1))
        if len(sides) > 1:
            ends = [[NODE_REF.match(p).group(1) for p in side.split("&")]  # type: ignore[union-attr]
                    for side in sides]
            for left, right in zip(ends, ends[1:], strict=False):
                arrows.update((a, b) for a in left for b in right)
    return boxes, groups, arrows


def resolve(name: str, known: set[str]) -> set[str]:
    dotted = "interpreter." + name.rstrip("/").replace("/", ".")
    if name.endswith("/"):
        return {m for m in known if m == dotted or m.startswith(dotted + ".")}
    return {dotted} if dotted in known else set()


def test_the_diagram_is_the_import_graph():
    mods = modules()
    known = set(mods)
    boxes, groups, arrows = parse(diagram(DOC.read_text()))
    members: dict[str, set[str]] = {}
    problems: list[str] = []
    for box, names in boxes.items():
        members[box] = set()
        for name in names:
            found = resolve(name, known)
            if not found:
                problems.append(f"box {box} names {name!r}, which is no module of interpreter")
            members[box] |= found
    box_of = {m: box for box, ms in members.items() for m in ms}
    problems += [f"module {m} is in no box of the diagram"
                 for m in sorted(known - set(box_of) - OUTSIDE)]

    def within(node: str) -> set[str]:
        """The boxes a node stands for: itself, or the boxes of its group."""
        return groups.get(node, {node})

    real: set[tuple[str, str]] = set()
    for name, path in mods.items():
        for target in imports_of(name, path, known):
            a, b = box_of.get(name), box_of.get(target)
            if a and b and a != b:
                real.add((a, b))
    for a, b in sorted(arrows):
        if a not in boxes and a not in groups or b not in boxes and b not in groups:
            problems.append(f"arrow {a} --> {b} names a box that is not drawn")
        elif not any((x, y) in real for x in within(a) for y in within(b)):
            problems.append(f"arrow {a} --> {b} is drawn, but no module of {a} imports {b}")
    covered = {(x, y) for a, b in arrows for x in within(a) for y in within(b)}
    problems += [f"{a} imports {b} ({', '.join(sorted(members[b]))}): draw {a} --> {b}"
                 for a, b in sorted(real - covered)]
    assert not problems, "docs/architecture.md's diagram:\n" + "\n".join(problems)


def test_the_parser_reads_boxes_groups_and_arrows():
    boxes, groups, arrows = parse('''flowchart TD
    A["wave_store (claim, commit)"] --> B["ops/ · admin (reads)"]
    subgraph G["the ground floor"]
        C["errors"]
    end
    A & B --> G
''')
    assert boxes == {"A": ["wave_store"], "B": ["ops/", "admin"], "C": ["errors"]}
    assert groups == {"G": {"C"}}
    assert arrows == {("A", "B"), ("A", "G"), ("B", "G")}
