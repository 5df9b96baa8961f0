"""A slow script actor for bench/bench_admission.py: it sleeps `params.seconds`
per subject of its wave, standing in for a rate-limited API or a model that
takes a while, so that a backlog lasts a known minimum time whatever the load.
"""

from __future__ import annotations

import time
from typing import Any

from interpreter.actor_api import Subject


def sleepy(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    time.sleep(float(params.get("seconds", 0.05)) * len(subjects))
    return [None] * len(subjects)
