-- The timeline (docs/ops.md, "Timeline"): the model lane's intervals and the
-- hardware samples, written by the engine's utilisation recorder and read by
-- `interp status`, `interp timeline` and the dashboard.

-- name: timeline_insert_interval
INSERT INTO interp.lane_intervals (run_id, worker_id, lane, cause, model, step, subjects,
                                   started_at, ended_at)
VALUES (%(run_id)s, %(worker_id)s, %(lane)s, %(cause)s, %(model)s, %(step)s, %(subjects)s,
        to_timestamp(%(started)s), to_timestamp(%(ended)s))
RETURNING id

-- name: timeline_update_interval
-- An interval written while it ran, now longer (or ended, or relabelled).
UPDATE interp.lane_intervals
   SET cause = %(cause)s, model = %(model)s, step = %(step)s, subjects = %(subjects)s,
       started_at = to_timestamp(%(started)s), ended_at = to_timestamp(%(ended)s)
 WHERE id = %(id)s

-- name: timeline_insert_sample
INSERT INTO interp.utilisation (run_id, worker_id, at, cpu_pct, gpu_pct, gpu_mem_used_mb,
                                gpu_mem_total_mb)
VALUES (%(run_id)s, %(worker_id)s, to_timestamp(%(at)s), %(cpu_pct)s, %(gpu_pct)s,
        %(gpu_mem_used_mb)s, %(gpu_mem_total_mb)s)

-- name: timeline_now
SELECT now() AS now

-- name: timeline_intervals
-- The workflow's lane intervals that overlap the window, oldest first.
SELECT i.id, i.run_id, i.worker_id, i.lane, i.cause, i.model, i.step, i.subjects,
       i.started_at, i.ended_at,
       extract(epoch FROM i.ended_at - i.started_at) AS seconds
  FROM interp.lane_intervals i
 WHERE i.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)
   AND i.ended_at >= %(since)s
 ORDER BY i.started_at, i.id
 LIMIT %(limit)s

-- name: timeline_samples
-- Hardware samples of the workflow's runs in the window, averaged over buckets
-- of %(bucket_s)s seconds (a day at one sample a second would be 86,400 points).
SELECT to_timestamp(avg(extract(epoch FROM u.at))) AS at,
       avg(u.cpu_pct)::real AS cpu_pct, avg(u.gpu_pct)::real AS gpu_pct,
       avg(u.gpu_mem_used_mb)::real AS gpu_mem_used_mb,
       max(u.gpu_mem_total_mb)::real AS gpu_mem_total_mb, count(*) AS samples
  FROM interp.utilisation u
 WHERE u.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)
   AND u.at >= %(since)s
 GROUP BY date_bin(make_interval(secs => %(bucket_s)s), u.at, '2000-01-01')
 ORDER BY 1

-- name: timeline_first_moment
-- When the workflow's recorded timeline begins, within the window.
SELECT least((SELECT min(i.started_at) FROM interp.lane_intervals i
               WHERE i.run_id IN (SELECT run_id FROM interp.runs
                                   WHERE workflow_id = %(workflow_id)s)
                 AND i.ended_at >= %(since)s),
             (SELECT min(u.at) FROM interp.utilisation u
               WHERE u.run_id IN (SELECT run_id FROM interp.runs
                                   WHERE workflow_id = %(workflow_id)s)
                 AND u.at >= %(since)s)) AS first

-- name: timeline_model_events
SELECT e.event, e.model, e.from_model, e.duration_ms, e.detail, e.at, e.run_id
  FROM interp.model_events e
 WHERE e.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)
   AND e.at >= %(since)s AND e.event IN ('load', 'switch', 'load_failed')
 ORDER BY e.at, e.event_id

-- name: timeline_breaker_openings
-- The actors of the workflow's steps whose breaker opened in the window (the
-- breaker keeps the time of its last opening while it is open or probing).
SELECT h.actor, h.state, h.opened_at, h.last_error,
       (SELECT min(s.execution_order) FROM interp.steps s
         WHERE s.workflow_id = %(workflow_id)s AND s.actor = h.actor) AS step
  FROM interp.actor_health h
 WHERE h.actor IN (SELECT actor FROM interp.steps WHERE workflow_id = %(workflow_id)s)
   AND h.opened_at >= %(since)s
 ORDER BY h.opened_at

-- name: timeline_lane_window_end
-- Where the lane-time window ends: the end of the workflow's latest interval
-- (now, give or take a write, while a run is going).
SELECT max(i.ended_at) AS ended_at
  FROM interp.lane_intervals i
 WHERE i.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)

-- name: timeline_lane_seconds
-- Lane time per cause within [start, end], each interval clipped to it.
SELECT i.cause,
       sum(extract(epoch FROM least(i.ended_at, %(end)s) - greatest(i.started_at, %(start)s)))
           AS seconds
  FROM interp.lane_intervals i
 WHERE i.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)
   AND i.lane = 'model' AND i.ended_at > %(start)s AND i.started_at < %(end)s
 GROUP BY i.cause

-- name: timeline_gpu_mean
-- Mean GPU utilisation within [start, end], over all samples and over the
-- samples taken while the model lane was generating.
SELECT avg(u.gpu_pct)::float AS gpu_mean,
       avg(u.gpu_pct) FILTER (WHERE EXISTS (
           SELECT 1 FROM interp.lane_intervals i
            WHERE i.run_id = u.run_id AND i.cause = 'generating'
              AND u.at >= i.started_at AND u.at < i.ended_at))::float AS gpu_generating
  FROM interp.utilisation u
 WHERE u.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)
   AND u.at >= %(start)s AND u.at <= %(end)s AND u.gpu_pct IS NOT NULL

-- name: timeline_prune_intervals
-- One batch of a workflow's intervals that ended before the cutoff.
WITH doomed AS (
    SELECT id FROM interp.lane_intervals
     WHERE run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(wf)s)
       AND ended_at < %(cutoff)s
     LIMIT %(limit)s
), gone AS (
    DELETE FROM interp.lane_intervals
     WHERE %(delete)s AND id IN (SELECT id FROM doomed)
    RETURNING 1
)
SELECT (SELECT count(*) FROM doomed) AS candidates, (SELECT count(*) FROM gone) AS deleted

-- name: timeline_prune_samples
-- One batch of a workflow's hardware samples taken before the cutoff.
WITH doomed AS (
    SELECT ctid FROM interp.utilisation
     WHERE run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(wf)s)
       AND at < %(cutoff)s
     LIMIT %(limit)s
), gone AS (
    DELETE FROM interp.utilisation
     WHERE %(delete)s AND ctid IN (SELECT ctid FROM doomed)
    RETURNING 1
)
SELECT (SELECT count(*) FROM doomed) AS candidates, (SELECT count(*) FROM gone) AS deleted
