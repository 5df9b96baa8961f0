"""The migrations and seeds inside the package are the repository's schema/ and seeds/."""

from __future__ import annotations

from interpreter.migrations import known_migrations, packaged_schema
from interpreter.seeds import packaged_seeds
from tests.helpers import REPO_ROOT


def sql_files(folder) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.name.endswith(".sql")}


def test_packaged_schema_is_the_schema_folder():
    assert sql_files(packaged_schema()) == sql_files(REPO_ROOT / "schema")
    assert [m.path.name for m in known_migrations()] == sorted(sql_files(REPO_ROOT / "schema"))


def test_packaged_seeds_are_the_seeds_folder_in_load_order():
    assert {f.name: f.read_bytes() for f in packaged_seeds()} == sql_files(REPO_ROOT / "seeds")
    assert [f.name for f in packaged_seeds()] == ["0010_domain.sql", "0020_skills.sql",
                                                  "1001_example_word_count.sql",
                                                  "3001_job_pipeline.sql"]
