"""interp: a workflow interpreter driven by PostgreSQL."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root holds schema/ and seeds/; an editable install (what
# `make run` does) keeps them next to the package.
REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO_ROOT / "schema"
SEEDS_DIR = REPO_ROOT / "seeds"
