"""The read side's wing: what an operator reads, and `interp prune`.

One module per view: ``status`` (status and ETA), ``trace``, ``timeline``,
``progress`` (`interp run`'s live view), ``metrics`` (Prometheus),
``dashboard`` (the page and its JSON routes), ``export`` (a workflow's
definition and diagrams); ``figures`` holds the one rounding rule and rate they
share, and ``prune`` the one maintenance verb. Each reads through the query
registry (interpreter/sql/*.sql: ops.sql, timeline.sql...) and writes nothing,
except ``prune``. Only the CLI imports this wing, and it imports no room of
the engine's run (tests/unit/test_architecture.py).
"""
