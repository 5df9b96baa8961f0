-- Prometheus metrics (interpreter/ops/metrics.py, docs/ops.md "Metrics"), read at
-- scrape time. Every query reads a rollup or an indexed range, never a full
-- scan of interp.checkpoints or interp.subject_state: a scrape must stay cheap
-- with millions of checkpoints (interp.waves is the one table read in full;
-- it holds one row per wave, not per subject).

-- name: metrics_scrape_settings
-- For this scrape's transaction only: every statement bounded (milliseconds,
-- as text), and no JIT: the planner's estimates for the wave histogram's few
-- rows cross the JIT threshold, and compiling costs far more than the query
-- (docs/benchmarks.md, "Status & prune").
SELECT set_config('statement_timeout', %(ms)s, true), set_config('jit', 'off', true)

-- name: metrics_transitions
-- Checkpoints (transitions taken, and failed attempts) per workflow, step,
-- outcome and success, all time: the rollup survives `interp prune`.
SELECT t.workflow_id, t.step, t.outcome, t.ok, sum(t.n)::bigint AS n
  FROM interp.checkpoint_totals t
 GROUP BY t.workflow_id, t.step, t.outcome, t.ok
HAVING sum(t.n) <> 0
 ORDER BY 1, 2, 3, 4

-- name: metrics_steps
-- Subjects per step of every workflow by status (ready = the step's queue),
-- every defined step listed even when it holds nothing.
SELECT s.workflow_id, s.execution_order AS step, s.name, coalesce(s.actor, '') AS actor,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'ready'), 0)::bigint AS ready,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'leased'), 0)::bigint AS leased,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'dead'), 0)::bigint AS dead,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'cancelled'), 0)::bigint AS cancelled
  FROM interp.steps s
  LEFT JOIN interp.subject_counts c
         ON c.workflow_id = s.workflow_id AND c.step = s.execution_order
 GROUP BY s.workflow_id, s.execution_order, s.name, s.actor
 ORDER BY 1, 2

-- name: metrics_workflows
-- Subjects that ended done (the rollup's step 0), and whether the workflow is paused.
SELECT w.workflow_id, w.paused,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'done'), 0)::bigint AS done
  FROM interp.workflows w
  LEFT JOIN interp.subject_counts c ON c.workflow_id = w.workflow_id AND c.step = 0
 GROUP BY w.workflow_id, w.paused
 ORDER BY 1

-- name: metrics_wave_durations
-- A histogram of finished waves' durations (started to finished) per workflow
-- and lane, cumulative per upper bound as Prometheus wants it (le: duration
-- <= bound). %(bounds)s are the finite upper bounds, ascending; bucket
-- n + 1 stands for +Inf.
-- width_bucket counts a value on a threshold into the bucket above it, the
-- opposite of `le`; on the negated durations against the negated bounds
-- (ascending again) it returns j with bounds[n - j] < d <= bounds[n + 1 - j],
-- so n + 1 - j is the first bucket whose bound d does not exceed.
WITH w AS (
    SELECT v.workflow_id,
           CASE WHEN v.model IS NULL THEN 'cheap' ELSE 'model' END AS lane,
           extract(epoch FROM v.finished_at - coalesce(v.started_at, v.claimed_at))::float8 AS d
      FROM interp.waves v
     WHERE v.finished_at IS NOT NULL
), neg AS (
    SELECT array_agg(-b ORDER BY b DESC) AS bounds, cardinality(%(bounds)s::float8[]) AS n
      FROM unnest(%(bounds)s::float8[]) b
), g AS (
    SELECT w.workflow_id, w.lane, neg.n + 1 - width_bucket(-w.d, neg.bounds) AS bucket,
           count(*) AS n, sum(w.d) AS total
      FROM w, neg
     GROUP BY 1, 2, 3
), series AS (
    SELECT DISTINCT g.workflow_id, g.lane FROM g
)
SELECT s.workflow_id, s.lane,
       array_agg(coalesce((SELECT sum(h.n) FROM g h
                            WHERE h.workflow_id = s.workflow_id AND h.lane = s.lane
                              AND h.bucket <= k), 0)::bigint ORDER BY k) AS cumulative,
       (SELECT sum(h.total) FROM g h
         WHERE h.workflow_id = s.workflow_id AND h.lane = s.lane)::float8 AS total
  FROM series s, neg, generate_series(1, neg.n + 1) AS k
 GROUP BY s.workflow_id, s.lane
 ORDER BY 1, 2

-- name: metrics_breakers
-- Every actor's breaker: an actor never judged is closed. Breakers kept for
-- something other than an actor row (a remote server of a model) are listed too.
SELECT coalesce(h.actor, a.name) AS actor, coalesce(h.state, 'closed') AS state,
       coalesce(h.consecutive_failures, 0) AS failures
  FROM interp.actors a
  FULL JOIN interp.actor_health h ON h.actor = a.name
 ORDER BY 1

-- name: metrics_model_tokens
-- Tokens of model steps' checkpoints that finished in the last %(window_s)s
-- seconds, per workflow, step and model: one range of the (workflow_id, step,
-- finished_at) index per model step, so the cost follows the window's rows,
-- not the table.
SELECT s.workflow_id, s.execution_order AS step, coalesce(c.model, '') AS model,
       coalesce(sum(c.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(c.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(c.prompt_tokens_reused), 0)::bigint AS prompt_tokens_reused,
       coalesce(sum(c.forced_tokens), 0)::bigint AS forced_tokens
  FROM interp.steps s
  JOIN interp.actors a ON a.name = s.actor AND a.kind = 'model'
  JOIN interp.checkpoints c
    ON c.workflow_id = s.workflow_id AND c.step = s.execution_order
   AND c.finished_at > now() - make_interval(secs => %(window_s)s)
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3

-- name: metrics_lane_table
-- The lane intervals table comes with a later migration; until then the
-- lane-time metric is left out.
SELECT to_regclass('interp.lane_intervals') IS NOT NULL AS present

-- name: metrics_lane_time
-- Seconds each lane spent per cause, all runs; an interval still open counts
-- up to now.
SELECT coalesce(r.workflow_id::text, '') AS workflow, li.lane, li.cause,
       sum(extract(epoch FROM coalesce(li.ended_at, now()) - li.started_at))::float8 AS seconds
  FROM interp.lane_intervals li
  LEFT JOIN interp.runs r ON r.run_id = li.run_id
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3
