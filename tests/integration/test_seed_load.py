"""`interp seed load` keeps its promise: a file is applied whole or not at all,
and a file it cannot read is named with where it went wrong."""

from __future__ import annotations

from tests.helpers import REPO_ROOT


def table_exists(conn, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) AS t", (name,)).fetchone()["t"] is not None


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_file_with_its_own_commit_is_refused_before_anything_runs(cli, conn, tmp_path):
    seed = tmp_path / "early_commit.sql"
    seed.write_text("CREATE TABLE public.early (id int);\n"
                    "COMMIT;\n"
                    "INSERT INTO public.no_such_table VALUES (1);\n")
    proc = cli("seed", "load", str(seed), check=False)
    assert proc.returncode == 1
    [line] = error_lines(proc.stderr)
    assert f"{seed}:2" in line and "COMMIT" in line and "nothing from this file" in line
    assert not table_exists(conn, "public.early")  # the COMMIT did not commit half the file


def test_an_export_followed_by_a_failing_statement_applies_nothing(cli, conn, tmp_path):
    cli("seed", "load", str(REPO_ROOT / "seeds" / "0010_domain.sql"),
        str(REPO_ROOT / "seeds" / "1001_example_word_count.sql"))
    exported = cli("workflow", "export", "1001").stdout
    assert "BEGIN;" not in exported and "COMMIT;" not in exported
    conn.execute("DELETE FROM interp.workflows WHERE workflow_id = 1001")
    seed = tmp_path / "export_then_error.sql"
    seed.write_text(exported + "\nINSERT INTO public.no_such_table VALUES (1);\n")
    proc = cli("seed", "load", str(seed), check=False)
    assert proc.returncode == 1
    assert "nothing from this file was applied" in proc.stderr
    assert conn.execute("SELECT count(*) AS n FROM interp.workflows WHERE workflow_id = 1001"
                        ).fetchone()["n"] == 0
    # and the export alone loads back
    seed.write_text(exported)
    cli("seed", "load", str(seed))
    assert cli("workflow", "export", "1001").stdout == exported


def test_transaction_words_in_strings_bodies_and_comments_are_not_refused(cli, conn, tmp_path):
    seed = tmp_path / "quoted.sql"
    seed.write_text(
        "-- BEGIN; COMMIT; in a comment\n"
        "/* ROLLBACK; /* nested */ END; */\n"
        "CREATE TABLE public.quoted (note text);\n"
        "INSERT INTO public.quoted VALUES ('COMMIT;'), (E'it\\'s; END'), ($x$ROLLBACK;$x$);\n"
        "DO $$ BEGIN INSERT INTO public.quoted VALUES ('from a DO block'); END $$;\n"
        "CREATE FUNCTION public.quoted_n() RETURNS bigint LANGUAGE sql\n"
        "BEGIN ATOMIC SELECT count(*) FROM public.quoted; END;\n")
    cli("seed", "load", str(seed))
    assert conn.execute("SELECT public.quoted_n() AS n").fetchone()["n"] == 4


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_byte_offset(cli, conn, tmp_path):
    seed = tmp_path / "latin1.sql"
    seed.write_bytes(b"CREATE TABLE public.latin (note text);\n"
                     b"INSERT INTO public.latin VALUES ('caf\xe9');\n")
    proc = cli("seed", "load", str(seed), check=False)
    assert proc.returncode == 1
    [line] = error_lines(proc.stderr)
    assert f"{seed}:2" in line and "byte offset 76" in line and "0xe9" in line
    assert "Traceback" not in proc.stderr
    assert not table_exists(conn, "public.latin")


def test_a_utf8_byte_order_mark_is_accepted(cli, conn, tmp_path):
    seed = tmp_path / "bom.sql"
    seed.write_bytes(b"\xef\xbb\xbf" + "CREATE TABLE public.with_bom (note text);\n"
                     "INSERT INTO public.with_bom VALUES ('café');\n".encode())
    cli("seed", "load", str(seed))
    assert conn.execute("SELECT note FROM public.with_bom").fetchone()["note"] == "café"
