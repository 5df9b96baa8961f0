"""Prometheus metrics, read from the database when Prometheus scrapes.

Many `interp run` processes share one database, and none of them sees the
others' work, so the figures are not counted in process memory: a collector
reads the database's rollups at scrape time (interpreter/sql/metrics.sql).
Every worker and the dashboard therefore expose the same, database-wide
figures; scrape one of them (docs/ops.md "Metrics").

A scrape is a few cheap statements on one pooled connection, each bounded by a
statement timeout. A part that fails (a lock held too long, a lost server)
leaves the other parts' figures in the answer and is reported by the gauge
`interp_scrape_error{part=...}`, never by an HTTP error, so one slow query
does not blank every panel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from psycopg_pool import PoolTimeout

from ..db import Database, one
from ..errors import InvalidValue, first_line, listen_error
from ..queries import Q
from .figures import tokens_per_s

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the wave duration histogram: gate and SQL waves
#: take milliseconds, model waves minutes.
WAVE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                600.0, 1800.0)
BREAKER_STATES = ("closed", "open", "half_open")

Conn = psycopg.Connection[Any]
Part = Callable[[Conn, "DatabaseCollector"], list[Metric]]


def _labels(*values: object) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def transitions(conn: Conn, _: DatabaseCollector) -> list[Metric]:
    family = CounterMetricFamily(
        "interp_transitions",
        "Checkpoints written per workflow, step and outcome (ok=false: a failed attempt).",
        labels=["workflow", "step", "outcome", "ok"])
    for r in conn.execute(Q["metrics_transitions"]):
        family.add_metric(_labels(r["workflow_id"], r["step"], r["outcome"],
                                  "true" if r["ok"] else "false"), r["n"])
    return [family]


def steps(conn: Conn, _: DatabaseCollector) -> list[Metric]:
    names = ["workflow", "step"]
    queue = GaugeMetricFamily("interp_queue_depth",
                              "Subjects ready at a step (due now or in retry backoff).",
                              labels=names)
    leased = GaugeMetricFamily("interp_leased_subjects", "Subjects at a step held by a wave now.",
                               labels=names)
    dead = GaugeMetricFamily("interp_dead_letters",
                             "Subjects dead-lettered at a step (interp.dead_letters).",
                             labels=names)
    cancelled = GaugeMetricFamily("interp_cancelled_subjects",
                                  "Subjects stopped at a step by `interp cancel`.", labels=names)
    info = GaugeMetricFamily("interp_step_info", "A workflow step's name and actor (always 1).",
                             labels=[*names, "name", "actor"])
    for r in conn.execute(Q["metrics_steps"]):
        key = _labels(r["workflow_id"], r["step"])
        queue.add_metric(key, r["ready"])
        leased.add_metric(key, r["leased"])
        dead.add_metric(key, r["dead"])
        cancelled.add_metric(key, r["cancelled"])
        info.add_metric([*key, r["name"], r["actor"]], 1)
    return [queue, leased, dead, cancelled, info]


def workflows(conn: Conn, _: DatabaseCollector) -> list[Metric]:
    done = GaugeMetricFamily("interp_subjects_done",
                             "Subjects that reached the end of their workflow.",
                             labels=["workflow"])
    paused = GaugeMetricFamily("interp_workflow_paused", "1 while the workflow is paused.",
                               labels=["workflow"])
    for r in conn.execute(Q["metrics_workflows"]):
        done.add_metric(_labels(r["workflow_id"]), r["done"])
        paused.add_metric(_labels(r["workflow_id"]), 1 if r["paused"] else 0)
    return [done, paused]


def wave_durations(conn: Conn, _: DatabaseCollector) -> list[Metric]:
    family = HistogramMetricFamily(
        "interp_wave_duration_seconds",
        "Finished waves' duration from start to commit, per workflow and lane (model, cheap).",
        labels=["workflow", "lane"])
    bounds = [*(floatToGoString(b) for b in WAVE_BUCKETS), "+Inf"]
    for r in conn.execute(Q["metrics_wave_durations"], {"bounds": list(WAVE_BUCKETS)}):
        family.add_metric(_labels(r["workflow_id"], r["lane"]),
                          list(zip(bounds, r["cumulative"], strict=True)), r["total"] or 0.0)
    return [family]


def breakers(conn: Conn, _: DatabaseCollector) -> list[Metric]:
    state = GaugeMetricFamily(
        "interp_breaker_state",
        "1 for the state each actor's circuit breaker is in, 0 for the others.",
        labels=["actor", "state"])
    failures = GaugeMetricFamily("interp_breaker_failures",
                                 "Actor failures in the breaker's window of recent subjects.",
                                 labels=["actor"])
    for r in conn.execute(Q["metrics_breakers"]):
        for s in BREAKER_STATES:
            state.add_metric([r["actor"], s], 1 if r["state"] == s else 0)
        failures.add_metric([r["actor"]], r["failures"])
    return [state, failures]


def model_tokens(conn: Conn, collector: DatabaseCollector) -> list[Metric]:
    window = collector.window_s
    names = ["workflow", "step", "model"]
    generated = GaugeMetricFamily(
        "interp_model_generated_tokens",
        f"Completion tokens generated by model steps in the last {window:g} s.", labels=names)
    prompt = GaugeMetricFamily(
        "interp_model_prompt_tokens",
        f"Prompt tokens read by model steps in the last {window:g} s.", labels=names)
    reused = GaugeMetricFamily(
        "interp_model_prompt_tokens_reused",
        f"Of the prompt tokens, those whose KV state was reused (the previous call's, or "
        f"the prefix cache's) in the last {window:g} s.", labels=names)
    forced = GaugeMetricFamily(
        "interp_model_forced_tokens",
        f"Completion tokens the output schema's grammar forced (jump-forward, not sampled) "
        f"in the last {window:g} s.", labels=names)
    speed = GaugeMetricFamily(
        "interp_model_tokens_per_second",
        f"Completion tokens per second, averaged over the last {window:g} s.", labels=names)
    for r in conn.execute(Q["metrics_model_tokens"], {"window_s": window}):
        key = _labels(r["workflow_id"], r["step"], r["model"])
        generated.add_metric(key, r["completion_tokens"])
        prompt.add_metric(key, r["prompt_tokens"])
        reused.add_metric(key, r["prompt_tokens_reused"])
        forced.add_metric(key, r["forced_tokens"])
        speed.add_metric(key, tokens_per_s(r["completion_tokens"], window, digits=None) or 0.0)
    return [generated, prompt, reused, forced, speed]


def lane_time(conn: Conn, _: DatabaseCollector) -> list[Metric]:
    # Databases migrated before the lane intervals existed have no such table.
    if not one(conn.execute(Q["metrics_lane_table"]))["present"]:
        return []
    family = CounterMetricFamily(
        "interp_lane_seconds",
        "Seconds a lane spent per cause (generating, loading, idle, ...), all runs.",
        labels=["workflow", "lane", "cause"])
    for r in conn.execute(Q["metrics_lane_time"]):
        family.add_metric([r["workflow"], r["lane"], r["cause"]], r["seconds"])
    return [family]


#: Each part runs in its own savepoint, so one failing leaves the others' figures.
PARTS: dict[str, Part] = {
    "transitions": transitions, "steps": steps, "workflows": workflows,
    "waves": wave_durations, "breakers": breakers, "model_tokens": model_tokens,
    "lane_time": lane_time,
}


class DatabaseCollector(Collector):
    """Reads the metrics from the database on each scrape.

    `db` is an `interpreter.db.Database`; a scrape borrows one of its pooled
    connections for at most about `timeout_s` per statement, and gives up the
    parts still to read once `timeout_s` times the number of parts has passed.
    """

    def __init__(self, db: Database, *, timeout_s: float = 2.0, window_s: float = 300.0):
        if timeout_s <= 0 or window_s <= 0:
            raise InvalidValue("the scrape timeout and the token window must be positive")
        self.db = db
        self.timeout_s = timeout_s
        self.window_s = window_s

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        families, failed = self.read()
        yield from families
        error = GaugeMetricFamily("interp_scrape_error",
                                  "1 when this part of the last scrape could not be read.",
                                  labels=["part"])
        for part in PARTS:
            error.add_metric([part], 1 if part in failed else 0)
        yield error
        yield GaugeMetricFamily("interp_scrape_duration_seconds",
                                "Time the last scrape spent reading the database.",
                                value=time.monotonic() - started)

    def describe(self) -> Iterable[Metric]:
        # Registering must not query the database; an empty answer says so.
        return []

    def read(self) -> tuple[list[Metric], set[str]]:
        """The families read, and the names of the parts that could not be read."""
        families: list[Metric] = []
        done: set[str] = set()
        deadline = time.monotonic() + self.timeout_s * len(PARTS)
        try:
            with self.db.connection(timeout=self.timeout_s) as conn:
                with conn.transaction():
                    conn.execute(Q["metrics_scrape_settings"],
                                 {"ms": str(max(1, int(self.timeout_s * 1000)))})
                    for name, part in PARTS.items():
                        if time.monotonic() < deadline and self._read_part(conn, name, part,
                                                                           families):
                            done.add(name)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("metrics: cannot read the database: %s", first_line(exc))
        return families, set(PARTS) - done

    def _read_part(self, conn: Conn, name: str, part: Part, into: list[Metric]) -> bool:
        try:
            with conn.transaction():
                into.extend(part(conn, self))
        except psycopg.Error as exc:
            log.warning("metrics: part %s failed: %s", name, first_line(exc))
            if conn.broken:
                raise
            return False
        except Exception:  # a scrape answers with what it has, never with a 500
            log.exception("metrics: part %s failed", name)
            return False
        return True


def metrics_registry(db: Database, *, timeout_s: float = 2.0, window_s: float = 300.0
                     ) -> CollectorRegistry:
    """A registry holding only the database collector (no process metrics of its own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db, timeout_s=timeout_s, window_s=window_s))
    return registry


def serve_metrics(db: Database, addr: str, port: int) -> tuple[Any, str]:
    """Start the metrics HTTP server on a daemon thread; returns it and its URL.

    The caller stops it with `server.shutdown(); server.server_close()`.
    """
    registry = metrics_registry(db)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise listen_error(exc, addr, port, flag="--metrics-port",
                           doing="serve metrics") from None
    host, bound = str(server.server_address[0]), server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound}/metrics"
