"""A script actor for the operator-verb tests (tests/integration/test_operator_verbs.py)."""

from __future__ import annotations

import time
from typing import Any

from interpreter.actor_api import Subject


def slow_unless_marked(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Sleeps params.sleep_s per wave (so waves hold live leases for a while), then
    fails each subject whose title contains 'BOOM' and passes the others."""
    time.sleep(float(params.get("sleep_s", 0.2)))
    return [RuntimeError(f"subject {s.id} is marked BOOM")
            if "BOOM" in str(s.row.get("title", "")) else {"id": s.id, "visit": s.visit_of_step}
            for s in subjects]
