"""Script actors that wait for the test instead of for a clock.

A test that needs a wave to stay in flight, or two workers to overlap, decides
when that ends (it creates a file) rather than guessing how long is enough,
which a slow or loaded machine can make too short. Each waits at most
params.cap_s (default 60 s) so that a test that fails before it lets go does
not hang, and then goes on as if released: the test's own assertions say
what went wrong.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from interpreter.actor_api import Subject

POLL_S = 0.02


def until_file(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Holds the wave until the file params.path exists, then passes every subject."""
    path = Path(params["path"])
    deadline = time.monotonic() + float(params.get("cap_s", 60))
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return [{"id": s.id} for s in subjects]


def meet(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """A barrier between worker processes: each process's first wave waits until
    params.parties (default 2) processes have run a wave of this actor, each
    leaving a file named by its pid in the folder params.dir; later waves find
    them there and pass at once. The cap counts from this process's arrival, so
    a process that waited in vain does not wait again at every wave."""
    folder = Path(params["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / str(os.getpid())
    if not mine.exists():
        mine.touch()
    deadline = mine.stat().st_mtime + float(params.get("cap_s", 60))
    parties = int(params.get("parties", 2))
    while len(list(folder.iterdir())) < parties and time.time() < deadline:
        time.sleep(POLL_S)
    return [{"id": s.id} for s in subjects]
