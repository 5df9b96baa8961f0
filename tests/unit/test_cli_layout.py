"""The command line's shape: no SQL in its modules, plain registration, the engine's defaults."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import click

import interpreter.cli as cli_package
from interpreter.cli import cli
from interpreter.engine import RunOptions

CLI_DIR = Path(cli_package.__file__).parent
SQL = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|ROLE|"
                 r"SCHEMA|INDEX)|ALTER\s+(TABLE|ROLE)|GRANT\s+\w+|REVOKE\s+\w+)\b")


def string_literals(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_cli_modules_hold_no_sql():
    found = {p.name: s for p in CLI_DIR.glob("*.py") for s in string_literals(p) if SQL.search(s)}
    assert found == {}


def test_commands_are_registered_plainly():
    for path in CLI_DIR.glob("*.py"):
        assert "importlib" not in path.read_text(), path.name
    assert set(cli.commands) == {"db", "seed", "workflow", "run", "pause", "resume", "status",
                                 "trace", "prune", "dashboard", "models",
                                 "breaker", "timeline", "retry", "rewind", "cancel",
                                 "experiment"}
    db = cli.commands["db"]
    assert isinstance(db, click.Group) and "roles" in db.commands


def test_run_defaults_are_the_engines():
    defaults = RunOptions()
    options = {p.name: p.default for p in cli.commands["run"].params}
    shared = {f.name for f in dataclasses.fields(RunOptions)} & set(options)
    assert {"batch_size", "model_batch_size", "lease_s", "poll_s", "switch_ratio",
            "model_memory_mb"} <= shared
    for name in shared - {"limit", "until_idle", "worker_id"}:
        assert options[name] == getattr(defaults, name), name


def test_a_new_command_is_one_click_command_and_one_registration(capsys):
    """docs/architecture.md, "Where to add things: a new CLI command": a click command
    whose help ends with an Example:, added to the group. The one place that turns
    errors into exit codes (cli.main) then serves it: its InterpError is one line."""
    from interpreter.cli import main
    from interpreter.errors import InterpError

    @click.command("hello")
    @click.argument("name")
    def hello(name: str) -> None:
        """Greets NAME; refuses an empty one.

        Example:

            interp hello world
        """
        if not name:
            raise InterpError("a name cannot be empty")
        click.echo(f"hello {name}")

    cli.add_command(hello)
    try:
        main(["hello", "world"])
        assert capsys.readouterr().out == "hello world\n"
        try:
            main(["hello", ""])
        except SystemExit as exc:
            assert exc.code == 1
        else:
            raise AssertionError("an InterpError must exit non-zero")
        assert capsys.readouterr().err == "error: a name cannot be empty\n"
        assert "Example:" in (cli.commands["hello"].help or "")
    finally:
        del cli.commands["hello"]
