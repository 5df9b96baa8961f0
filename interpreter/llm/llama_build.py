"""What the installed llama.cpp build does on this CPU, and a loader that avoids what crashes.

llama.cpp built with ``-march=native`` on a CPU with Intel AMX (Sapphire Rapids and
later) compiles its AMX matrix kernels, and the weights are then repacked into an
AMX "extra buffer type" at load. With the default models (SmolLM2 Q4_1, Gemma-3
Q4_K_M) the first decode then kills the process: SIGSEGV in
``ggml_backend_amx_mul_mat`` (llama-cpp-python 0.3.36, both models, bare
llama-cpp-python too: docs/benchmarks.md, "Traps found on the way"). A segfault cannot
be caught, so a run would die on its first model wave with no error line.

`open_llama` therefore loads with llama.cpp's extra buffer types off when the build
has the AMX kernels, which avoids them (the model runs on the ordinary CPU
kernels). `make install` builds llama.cpp without AMX in the first place (the
Makefile's LLAMA_CMAKE_ARGS), which keeps the other repacked layouts; this guard is
for builds made elsewhere: a wheel installed by pip on such a CPU, or a cached
build. INTERP_LLAMA_EXTRA_BUFFERS=1 (or 0) forces the choice either way.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

# Environment variable that forces llama.cpp's extra buffer types on (1) or off (0).
EXTRA_BUFFERS_ENV = "INTERP_LLAMA_EXTRA_BUFFERS"
# Serialises the brief swap of llama-cpp-python's default model parameters below.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExtraBuffers:
    on: bool
    chosen_by: str


def build_features() -> set[str]:
    """The features llama.cpp's system info reports as compiled in (AVX2, AMX_INT8...)."""
    import llama_cpp.llama_cpp as lc

    info = lc.llama_print_system_info().decode("utf-8", "replace")
    features = set()
    for part in info.split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            features.add(name.strip())
    return features


def extra_buffers_choice() -> ExtraBuffers:
    """Whether models load with llama.cpp's extra buffer types (weight repacking)."""
    forced = os.environ.get(EXTRA_BUFFERS_ENV, "").strip()
    if forced in ("0", "1"):
        return ExtraBuffers(forced == "1", f"{EXTRA_BUFFERS_ENV}={forced}")
    if "AMX_INT8" in build_features():
        return ExtraBuffers(False, "off: this llama.cpp build has AMX kernels, which crash "
                                   "on the first decode (see interpreter/llm/llama_build.py)")
    return ExtraBuffers(True, "llama.cpp's default")


def open_llama(choice: ExtraBuffers | None = None, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)``, with extra buffer types off when they would crash
    (`extra_buffers_choice`, unless the caller has made the choice).

    llama-cpp-python offers no argument for ``use_extra_bufts``: its constructor
    takes the defaults from ``llama_model_default_params()`` and loads at once. So
    for the length of the load, that function returns defaults with the field off
    (under a lock, and put back even when the load fails)."""
    import llama_cpp.llama as llama_module
    from llama_cpp import Llama

    from .native_log import install as route_native_log

    route_native_log()   # llama.cpp's log lines to the log, not through the terminal
    if (choice or extra_buffers_choice()).on:
        return Llama(**kwargs)
    lc = llama_module.llama_cpp
    with _LOAD_LOCK:
        defaults = lc.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        lc.llama_model_default_params = without_extra_buffers
        try:
            return Llama(**kwargs)
        finally:
            lc.llama_model_default_params = defaults
