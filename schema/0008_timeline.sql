-- Where the model lane's time went, and how busy the hardware was meanwhile
-- (docs/ops.md, "Timeline").
--
-- lane_intervals: what a lane was doing at every moment of a run, as
-- contiguous, non-overlapping intervals per (run, lane). The engine writes
-- them batched every few seconds; the interval still running is written too
-- (ended_at = the last write) and extended by the next write.
CREATE TABLE interp.lane_intervals (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES interp.runs ON DELETE CASCADE,
    worker_id   text NOT NULL,
    lane        text NOT NULL CHECK (lane IN ('model', 'cheap')),
    cause       text NOT NULL CHECK (cause IN ('generating', 'loading', 'switching',
                                               'waiting_claim', 'breaker', 'waiting_commit',
                                               'idle', 'paused')),
    model       text,
    step        integer,
    subjects    integer,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    CHECK (ended_at >= started_at)
);
CREATE INDEX lane_intervals_run_time ON interp.lane_intervals (run_id, started_at);
CREATE INDEX lane_intervals_ended ON interp.lane_intervals (ended_at);

-- utilisation: one hardware sample per worker about every second, written
-- batched. CPU is the machine's (psutil); the GPU columns are NULL without a
-- GPU (or without nvidia-ml-py).
CREATE TABLE interp.utilisation (
    run_id           bigint NOT NULL REFERENCES interp.runs ON DELETE CASCADE,
    worker_id        text NOT NULL,
    at               timestamptz NOT NULL,
    cpu_pct          real NOT NULL,
    gpu_pct          real,
    gpu_mem_used_mb  real,
    gpu_mem_total_mb real
);
CREATE INDEX utilisation_run_at ON interp.utilisation (run_id, at);
CREATE INDEX utilisation_at ON interp.utilisation (at);
