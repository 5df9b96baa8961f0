"""One error tree: every exception class the package defines derives from
`errors.InterpException`; the user-facing ones (`InterpError`) carry an exit code,
which the CLI's `main` (the one place that maps errors to exit codes) uses."""

from __future__ import annotations

import importlib
import inspect

from interpreter.errors import InternalError, InterpError, InterpException
from tests.unit.test_architecture import modules


def exception_classes() -> list[type[BaseException]]:
    found = []
    for name in sorted(modules()):
        if name.endswith("__main__"):   # importing it runs the CLI
            continue
        module = importlib.import_module(name)
        found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, BaseException) and cls.__module__ == name]
    return found


def test_every_exception_of_the_package_is_in_the_one_tree():
    classes = exception_classes()
    assert len(classes) >= 10
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes
               if not issubclass(c, InterpException)]
    assert not outside, "exceptions outside errors.InterpException: " + ", ".join(outside)


def test_user_facing_errors_carry_an_exit_code_and_internal_ones_do_not():
    for cls in exception_classes():
        if issubclass(cls, InterpError):
            assert isinstance(cls.exit_code, int) and cls.exit_code > 0, cls
        else:
            assert issubclass(cls, InternalError) or cls is InterpException, cls
            assert not hasattr(cls, "exit_code"), cls


def test_the_package_raises_no_bare_builtin_error():
    """What the package raises is in the tree too: a builtin error where one is
    expected (json's TypeError, a caller's ValueError) comes from a tree class that
    also derives from it (errors.InvalidValue, errors.NotJsonValue)."""
    import re
    from pathlib import Path

    builtin = re.compile(r"\braise (ValueError|TypeError|RuntimeError|KeyError|LookupError|"
                         r"OSError|IOError|Exception)\b")
    root = Path(__file__).resolve().parents[2] / "interpreter"
    found = [f"{path.relative_to(root.parent)}:{n}" for path in sorted(root.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if builtin.search(line)]
    assert not found, "builtin errors raised outside the tree: " + ", ".join(found)
