"""The run's utilisation recorder: a thread that looks at the hardware about once a second and
writes, every few seconds in one transaction, its samples (interp.utilisation)
and the model lane's intervals (interp.lane_intervals, from the lane's clock).

CPU use comes from psutil (the whole machine's). GPU use and memory come from
NVML through nvidia-ml-py, only when it is installed and finds a GPU; without
them the GPU columns stay NULL. Nothing here ever stops a run: a failed write
is logged and its rows are tried again at the next write (samples up to
MAX_PENDING_SAMPLES, the older ones are dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psutil
import psycopg

from .errors import first_line
from .lane_clock import Interval, LaneClock
from .queries import Q
from .run_context import RunContext

log = logging.getLogger(__name__)

SAMPLE_S = 1.0
WRITE_S = 5.0
MAX_PENDING_SAMPLES = 3600
NO_GPU: dict[str, float | None] = {"gpu_pct": None, "gpu_mem_used_mb": None,
                                   "gpu_mem_total_mb": None}


class Gpu:
    """NVML's view of the machine's GPUs, or nothing (`available` is False)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # nvidia-ml-py: optional, `pip install interp[gpu]`

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                             for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - not installed, no driver or no GPU: no GPU figures
            self._handles = []

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read(self) -> dict[str, float | None]:
        """Mean utilisation over the GPUs (percent) and their memory in MiB, summed."""
        if not self._handles:
            return NO_GPU
        try:
            util = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
            mem = [self._nvml.nvmlDeviceGetMemoryInfo(h) for h in self._handles]
        except Exception as exc:  # noqa: BLE001 - a GPU that stops answering: no figure
            log.warning("NVML read failed: %s", first_line(exc))
            return NO_GPU
        mib = 1024 * 1024
        return {"gpu_pct": sum(util) / len(util),
                "gpu_mem_used_mb": sum(m.used for m in mem) / mib,
                "gpu_mem_total_mb": sum(m.total for m in mem) / mib}

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - on the way out
                pass
            self._nvml = None


class UtilisationRecorder:
    def __init__(self, ctx: RunContext, clock: LaneClock | None, *, sample_s: float = SAMPLE_S,
                 write_s: float = WRITE_S):
        self.ctx = ctx
        self.clock = clock
        self.sample_s = sample_s
        self.write_s = write_s
        self._samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpu: Gpu | None = None
        self.writes = 0

    def start(self) -> None:
        self._gpu = Gpu()
        psutil.cpu_percent(interval=None)  # the first reading only sets the baseline
        self._thread = threading.Thread(target=self._loop, name="utilisation", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, *, write_last: bool = True) -> None:
        """Ends the thread, ends the lane's last interval and writes what is left;
        without write_last (the run lost its database) what is left is dropped:
        the write would only wait for a pooled connection that cannot come."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.clock is not None:
            self.clock.finish()
        if write_last:
            self.write()
        if self._gpu is not None:
            self._gpu.close()

    def _loop(self) -> None:
        next_write = time.monotonic() + self.write_s
        while not self._stop.wait(self.sample_s):
            self.sample()
            if time.monotonic() >= next_write:
                self.write()
                next_write = time.monotonic() + self.write_s

    def sample(self) -> None:
        row: dict[str, Any] = {"at": time.time(), "cpu_pct": psutil.cpu_percent(interval=None)}
        row.update(self._gpu.read() if self._gpu is not None else NO_GPU)
        self._samples.append(row)

    def write(self) -> None:
        """Writes the samples and the lane's intervals in one transaction."""
        samples, self._samples = self._samples, []
        intervals = self.clock.pending() if self.clock is not None else []
        if not samples and not intervals:
            return
        ctx = self.ctx
        who = {"run_id": ctx.run_id, "worker_id": ctx.worker_id}

        def do(c: psycopg.Connection[Any]) -> list[tuple[Interval, int, int]]:
            if samples:
                c.cursor().executemany(Q["timeline_insert_sample"],
                                       [{**who, **s} for s in samples])
            return self._write_intervals(c, who, intervals)

        try:
            done = ctx.db.run(do, retry=False)
        except Exception as exc:  # noqa: BLE001 - never stop a run for its timeline
            log.warning("could not write the timeline: %s", first_line(exc))
            self._samples = (samples + self._samples)[-MAX_PENDING_SAMPLES:]
            return
        if self.clock is not None:
            self.clock.written(done)
        self.writes += 1

    def _write_intervals(self, c: psycopg.Connection[Any], who: dict[str, Any],
                         intervals: list[tuple[Interval, int, dict[str, object]]]
                         ) -> list[tuple[Interval, int, int]]:
        lane = self.clock.lane if self.clock is not None else "model"
        new = [(i, v, r) for i, v, r in intervals if r["id"] is None]
        old = [(i, v, r) for i, v, r in intervals if r["id"] is not None]
        done: list[tuple[Interval, int, int]] = []
        if old:
            c.cursor().executemany(Q["timeline_update_interval"], [r for _, _, r in old])
            done += [(i, v, int(r["id"])) for i, v, r in old]  # type: ignore[call-overload]
        if new:
            cur = c.cursor()
            cur.executemany(Q["timeline_insert_interval"],
                            [{**who, "lane": lane, **r} for _, _, r in new], returning=True)
            for i, v, _ in new:
                row: Any = cur.fetchone()
                done.append((i, v, int(row["id"] if isinstance(row, dict) else row[0])))
                cur.nextset()
        return done


def start_recording(ctx: RunContext) -> UtilisationRecorder | None:
    """Starts recording the run's timeline, for as long as the run: the hardware, and
    the model lane's intervals (when the workflow has model steps, its clock starts
    with the run, idle until the lane has work). None when the run was asked not to
    (RunOptions.timeline)."""
    if not ctx.opt.timeline:
        ctx.lane_clock.enabled = False
        return None
    wf = ctx.wf
    has_model_lane = wf is not None and any(wf.is_model_step(s) for s in wf.steps.values())
    if has_model_lane:
        ctx.lane_clock.enter("idle")
    recorder = UtilisationRecorder(ctx, ctx.lane_clock if has_model_lane else None)
    recorder.start()
    return recorder
