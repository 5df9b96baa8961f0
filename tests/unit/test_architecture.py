"""The house rules, checked on the source: rooms with public doors.

- no import cycle between the modules of `interpreter`, counting imports made
  inside functions and for type checking (a cycle hidden that way is still two
  rooms that each need the other);
- no module reaches into another module's `_private` names;
- no literal SQL outside the query registry (interpreter/sql/*.sql) and the
  migrations (schema/*.sql), so every statement can be read in one place.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "interpreter"

# A statement, not a word in a sentence: an upper-case keyword followed by what
# that statement needs next.
SQL = re.compile(r"\b(SELECT\s+[\w*(\"]|INSERT\s+INTO\b|UPDATE\s+[\w.\"]+\s+SET\b|"
                 r"DELETE\s+FROM\b|CREATE\s+(TABLE|INDEX|ROLE|DATABASE|SCHEMA)\b|"
                 r"ALTER\s+(TABLE|ROLE|DATABASE)\b|DROP\s+(TABLE|ROLE|DATABASE)\b|"
                 r"GRANT\s+\w+|REVOKE\s+\w+)")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The interpreter modules that `name` imports, anywhere in it."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{a.name}" for a in node.names)
    return {t for t in targets if t in known and t != name}


def test_no_import_cycle_in_the_engine():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    # A package's __init__ importing its own submodules is how a package is built,
    # not a cycle between rooms.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def private_accesses(path: Path) -> list[str]:
    """`obj._name` where obj is not self/cls, and `from x import _name`."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {alias.name}")
    return found


# The standard library's documented doors that begin with an underscore:
# sys._getframe, os._exit (leave without cleanup), namedtuple's _asdict...
STDLIB_DOORS = re.compile(r"\._(getframe|exit|asdict|replace|fields)$")


def test_no_module_reaches_into_another_modules_private_names():
    found = []
    for path in modules().values():
        found.extend(a for a in private_accesses(path) if not STDLIB_DOORS.search(a))
    assert not found, "private names used across modules: " + ", ".join(found)


def test_tests_use_public_doors():
    """Tests drive the engine through what its modules export, like any caller."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "test_architecture.py":
            continue
        found.extend(a for a in private_accesses(path) if not STDLIB_DOORS.search(a))
    assert not found, "tests reaching into private names: " + ", ".join(found)


def sql_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and SQL.search(node.value)]


def test_no_literal_sql_outside_the_registry():
    found = []
    for path in modules().values():
        found.extend(sql_literals(path))
    assert not found, "SQL outside interpreter/sql/*.sql: " + ", ".join(found)


def test_the_sql_pattern_finds_statements_not_prose():
    assert SQL.search("SELECT * FROM interp.steps")
    assert SQL.search("UPDATE interp.workflows SET paused = true")
    assert SQL.search("GRANT SELECT ON ALL TABLES")
    assert not SQL.search("Select a model to run")
    assert not SQL.search("update the docs and select a step")


MAX_LINES = 600


def test_no_module_is_over_600_lines():
    long = [f"{name} ({n} lines)" for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, "modules over 600 lines (split them by concern): " + ", ".join(long)


def test_the_read_side_is_a_wing():
    """interpreter/ops/ reads what the engine wrote: only the CLI (and ops itself)
    imports it, and it imports no room of the engine's run."""
    mods = modules()
    known = set(mods)
    engine_rooms = {"interpreter." + m for m in (
        "engine", "cheap_lane", "model_lane", "wave_store", "waves", "run_lifecycle",
        "admission", "breaker", "cheap_kinds", "model_actor", "utilisation")}
    found = []
    for name, path in mods.items():
        for target in imports_of(name, path, known):
            into_ops = target == "interpreter.ops" or target.startswith("interpreter.ops.")
            in_ops = name == "interpreter.ops" or name.startswith("interpreter.ops.")
            if into_ops and not in_ops and not name.startswith("interpreter.cli"):
                found.append(f"{name} imports {target}")
            if in_ops and target in engine_rooms:
                found.append(f"{name} imports {target}")
    assert not found, "the ops wing's walls: " + ", ".join(found)
