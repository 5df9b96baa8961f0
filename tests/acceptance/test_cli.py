"""The command line as a user meets it: help, errors, seeds, export."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from interpreter.cli import cli as root
from tests.helpers import REPO_ROOT


def all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


def test_every_command_has_an_example_in_its_help():
    assert "Example" in (root.help or "")
    missing = [" ".join(path) for path, cmd in all_commands(root) if "Example" not in
               (cmd.help or "")]
    assert missing == []


def test_help_runs_for_every_command():
    for path, _ in all_commands(root):
        proc = subprocess.run([sys.executable, "-m", "interpreter", *path, "--help"],
                              capture_output=True, text=True, cwd=REPO_ROOT)
        assert proc.returncode == 0 and "Example" in proc.stdout, path


def test_version_prints_the_package_version():
    from interpreter import __version__

    proc = subprocess.run([sys.executable, "-m", "interpreter", "--version"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"interp, version {__version__}"


def test_unreachable_dsn_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "interpreter", "--dsn",
                           "postgresql://nobody@127.0.0.1:1/db", "db", "info"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert "127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_verbose_is_read_from_the_parsed_options():
    base = [sys.executable, "-m", "interpreter", "--dsn", "postgresql://nobody@127.0.0.1:1/db"]
    verbose = subprocess.run([*base, "-v", "db", "info"], capture_output=True, text=True,
                             cwd=REPO_ROOT)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    # "-v" as the value of another option is not the flag.
    value = subprocess.run([*base, "trace", "--workflow", "1", "--subject", "-v"],
                           capture_output=True, text=True, cwd=REPO_ROOT)
    assert value.returncode == 2 and "Traceback" not in value.stderr
    assert len(value.stderr.strip().splitlines()) == 1


def test_unknown_workflow_is_a_clear_error(cli):
    for args in (("workflow", "show", "424242"), ("run", "--workflow", "424242", "--until-idle"),
                 ("workflow", "validate", "424242")):
        proc = cli(*args, check=False)
        assert proc.returncode == 1, args
        assert "workflow 424242 does not exist" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_db_info_and_migrate_twice(cli):
    assert "PostgreSQL" in cli("db", "info").stdout
    cli("db", "migrate")
    assert "nothing to migrate" in cli("db", "migrate").stderr


def test_broken_seed_is_rolled_back_and_names_file_and_line(cli, conn, tmp_path):
    bad = tmp_path / "broken.sql"
    bad.write_text("CREATE TABLE public.half_done (id int);\n"
                   "INSERT INTO public.half_done VALUES (1);\n"
                   "INSERT INTO public.no_such_table VALUES (1);\n")
    proc = cli("seed", "load", str(bad), check=False)
    assert proc.returncode == 1
    assert f"{bad}:3" in proc.stderr
    assert conn.execute("SELECT to_regclass('public.half_done') AS t").fetchone()["t"] is None


def test_seeds_load_twice_changes_nothing(cli, conn):
    cli("seed", "load", "seeds/")
    snapshot = conn.execute("SELECT (SELECT count(*) FROM interp.steps) AS s, "
                            "(SELECT count(*) FROM interp.actors) AS a, "
                            "(SELECT count(*) FROM interp.step_transitions) AS t").fetchone()
    versions = conn.execute("SELECT workflow_id, version FROM interp.workflows").fetchall()
    cli("seed", "load", "seeds/")
    again = conn.execute("SELECT (SELECT count(*) FROM interp.steps) AS s, "
                         "(SELECT count(*) FROM interp.actors) AS a, "
                         "(SELECT count(*) FROM interp.step_transitions) AS t").fetchone()
    assert snapshot == again
    assert versions  # a reload may bump versions; the definitions stay equal
    assert snapshot["s"] > 0


def test_seed_load_without_paths_loads_the_packaged_seeds(cli, conn, tmp_path):
    proc = cli("seed", "load")
    loaded = [line.rsplit("/", 1)[-1] for line in proc.stderr.splitlines()
              if line.startswith("loaded ")]
    assert loaded == ["0010_domain.sql", "0020_skills.sql", "1001_example_word_count.sql",
                      "3001_job_pipeline.sql"]
    ids = [r["workflow_id"] for r in conn.execute(
        "SELECT workflow_id FROM interp.workflows ORDER BY 1")]
    assert ids == [1001, 3001]
    assert conn.execute("SELECT count(*) AS n FROM public.skills").fetchone()["n"] > 0
    # A user's own file still loads by path, from any directory.
    mine = tmp_path / "mine.sql"
    mine.write_text("CREATE TABLE public.mine (id int);\n")
    cli("seed", "load", str(mine))
    assert conn.execute("SELECT to_regclass('public.mine') AS t").fetchone()["t"] is not None


def test_export_loads_back_to_the_same_definition(cli, conn):
    cli("seed", "load", "seeds/0010_domain.sql", "seeds/1001_example_word_count.sql")
    first = cli("workflow", "export", "1001").stdout
    conn.execute("DELETE FROM interp.step_transitions WHERE workflow_id = 1001")
    conn.execute("UPDATE interp.steps SET name = 'changed' WHERE workflow_id = 1001 "
                 "AND execution_order = 2")
    cli("seed", "load", "-", check=False)  # not a file: a clear error, nothing else
    path = REPO_ROOT / ".interp-export-test.sql"
    path.write_text(first)
    try:
        cli("seed", "load", str(path))
    finally:
        path.unlink()
    assert cli("workflow", "export", "1001").stdout == first


@pytest.mark.parametrize("fmt,needle", [("mermaid", "flowchart TD"), ("dot", "digraph"),
                                        ("json", '"steps"'), ("text", "Workflow 1001")])
def test_show_formats(cli, fmt, needle):
    cli("seed", "load", "seeds/0010_domain.sql", "seeds/1001_example_word_count.sql")
    assert needle in cli("workflow", "show", "1001", "--format", fmt).stdout


def test_pause_and_resume_unknown_workflow(cli):
    assert cli("pause", "999999", check=False).returncode == 1


def test_worked_example_runs_end_to_end(cli, conn):
    """docs/writing-workflows.md walks through seeds/1001; it must keep working."""
    cli("seed", "load", "seeds/0010_domain.sql", "seeds/1001_example_word_count.sql")
    conn.execute("INSERT INTO public.postings (posting_id, title, description, enabled) VALUES "
                 "(1, 'a', repeat('w ', 200), true), (2, 'b', 'short', true), "
                 "(3, 'c', 'off', false)")
    cli("run", "--workflow", "1001", "--until-idle")
    rows = conn.execute("SELECT posting_id, words, is_long FROM public.posting_stats "
                        "ORDER BY 1").fetchall()
    assert [(r["posting_id"], r["words"], r["is_long"]) for r in rows] == [(1, 200, True),
                                                                          (2, 1, False)]
    again = cli("run", "--workflow", "1001", "--until-idle", "--json").stdout
    assert '"checkpoints": 0' in again
