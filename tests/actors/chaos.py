"""Script actors for the chaos and hostile-input tests (tests/chaos/).

Ordinary script actors: nothing in the engine knows about them.
"""

from __future__ import annotations

import subprocess
from typing import Any

from interpreter.actor_api import Result, Subject


def exhaust_memory(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Really runs out of memory: allocates chunks until the allocator refuses.

    Only meaningful under an address-space limit (RLIMIT_AS), as the chaos test
    sets for its worker; ``max_gb`` stops it on a machine without one."""
    try:
        import numpy as np

        def alloc(n: int) -> Any:
            return np.zeros(n, dtype=np.uint8)  # calloc: pages are not touched, so it is fast
    except ImportError:  # pragma: no cover - numpy comes with llama-cpp-python
        alloc = bytearray
    chunks: list[Any] = []
    chunk = int(params.get("chunk_mb", 256)) << 20
    cap = int(params.get("max_gb", 64)) << 30
    total = 0
    while total < cap:
        chunks.append(alloc(chunk))
        total += chunk
    return [{"allocated": total} for _ in subjects]


def inspect_text(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Handles hostile text the way a careful actor does: renders the step's prompt
    template in the sandbox, and hands the title to a program as one argv element
    (never through a shell). Returns what it saw, so a test can check it stayed text."""
    from interpreter.templates import render

    body = str(params.get("template", "{{ title }}"))
    out = []
    for s in subjects:
        row = {k: v for k, v in s.row.items() if isinstance(v, str | int | float | bool)
               or v is None}
        title = str(row.get("title") or "")[:2000]
        echoed = subprocess.run(["/usr/bin/printf", "%s", title], capture_output=True, text=True,
                                timeout=10, check=True).stdout
        rendered = render(body, {**row, "subject": row, "out": {}, "step": {}})
        out.append(Result({"title": title[:300], "echo_same": echoed == title,
                           "rendered": rendered[:600]}, "DONE"))
    return out
