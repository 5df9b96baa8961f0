"""llama.cpp's own log lines, sent to Python logging instead of the terminal.

llama.cpp (and ggml under it) report through one process-wide log callback.
llama-cpp-python installs one at import that prints to ``sys.stderr``, and
its level table predates ggml's renumbering, so with ``verbose=False`` it still
printed lines such as ``llama_kv_cache_iswa: using full-size SWA cache`` right
through `interp run`'s live view. :func:`install` replaces that callback with
one that hands each line to the logger ``interpreter.llm.native_log`` at DEBUG:
`interp -v` shows them, otherwise they are dropped.

The callback is a ctypes function pointer that llama.cpp keeps: the module
holds a reference to it for the life of the process, or it would be collected
and the next log line would jump into freed memory.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_CALLBACK: Any = None
_LOCK = threading.Lock()


class LineJoiner:
    """Joins llama.cpp's pieces (it writes a line in parts, and progress dots with
    no newline at all) into whole lines, each handed to `sink` once. The level is
    not kept: every line goes to DEBUG, and ggml has numbered its levels two ways."""

    def __init__(self, sink: Any):
        self.sink = sink
        self.pending = ""
        self.lock = threading.Lock()

    def feed(self, text: str) -> None:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                if line.strip():
                    self.sink(line.rstrip())


def log_line(line: str) -> None:
    log.debug("llama.cpp: %s", line)


JOINER = LineJoiner(log_line)


def install() -> bool:
    """Routes llama.cpp's log to the logger (once per process; later calls do nothing).
    False when llama-cpp-python is not installed."""
    global _CALLBACK
    with _LOCK:
        if _CALLBACK is not None:
            return True
        try:
            import llama_cpp

            # Imported for its side effect: it sets its own callback at import, which
            # would replace ours if it came later.
            import llama_cpp._logger  # noqa: F401
        except ImportError:
            return False

        @llama_cpp.llama_log_callback  # type: ignore[misc]
        def forward(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
            try:
                JOINER.feed((text or b"").decode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - nothing may raise into C
                pass

        llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
        _CALLBACK = forward
        return True


__all__ = ["LineJoiner", "install"]
