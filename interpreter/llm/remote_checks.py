"""What `validate` asks of a model row served by OpenAI-compatible servers, through
the pool's table of backend kinds (`pool.register_backend_kind`'s ``problems``,
``warnings`` and ``environment``). No server is contacted.

Beside `remote` (the backend itself) so that validate names no backend kind: it
asks the kind of each model row the workflow uses.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..definitions import ModelDef
from ..errors import first_line
from .backend import ModelLoadError
from .remote import Endpoint, key_env_problem, remote_endpoints

# Hosts a key may travel to over plain http:// without a warning.
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def source_problems(model: ModelDef) -> list[str]:
    """A remote row must name its servers well (http(s) URLs, each at most once,
    `#parallel=N` with N >= 1): a run would fail its every wave otherwise. A URL
    that carries a secret (user:password, a query) is refused: the key belongs in
    an environment variable that api_key_env names."""
    try:
        remote_endpoints(model.source)
    except ModelLoadError as exc:
        return [f"model {model.name!r}: {first_line(exc)}"]
    return []


def key_warnings(model: ModelDef) -> list[str]:
    """A key that would travel unencrypted (http:// to a host that is not this one)."""
    if not model.api_key_env:
        return []
    return [f"model {model.name!r}: its key travels unencrypted to {endpoint.url} "
            f"(http://); use https://"
            for endpoint in _endpoints_or_none(model.source)
            if endpoint.url.startswith("http://")
            and (urlsplit(endpoint.url).hostname or "") not in LOOPBACK]


def environment_problems(model: ModelDef) -> list[str]:
    """What this process's environment lacks for the row: its key's variable (named,
    never its value), its CA bundle file."""
    out: list[str] = []
    problem = key_env_problem(model)
    if problem:
        out.append(problem)
    if model.ca_bundle and not os.path.isfile(model.ca_bundle):
        out.append(f"model {model.name!r}: its ca_bundle {model.ca_bundle} is not a file here")
    return out


def _endpoints_or_none(source: str) -> list[Endpoint]:
    try:
        return remote_endpoints(source)
    except ModelLoadError:
        return []       # a problem of source_problems


__all__ = ["LOOPBACK", "environment_problems", "key_warnings", "source_problems"]
