-- The edges of the ops views: which workflow the dashboard opens on, which run
-- its model-lane panel shows.

-- name: dashboard_latest_workflow
-- The workflow with the latest activity: its newest checkpoint (from the
-- rollup, never the raw table), or a run's start or heartbeat (a run admits and
-- claims subjects before any checkpoint). Without any, the first workflow.
SELECT w.workflow_id
  FROM interp.workflows w
  LEFT JOIN LATERAL (SELECT max(t.last_at) AS at FROM interp.checkpoint_totals t
                      WHERE t.workflow_id = w.workflow_id) c ON true
  LEFT JOIN LATERAL (SELECT max(greatest(r.started_at, r.heartbeat_at, r.finished_at)) AS at
                       FROM interp.runs r WHERE r.workflow_id = w.workflow_id) r ON true
 ORDER BY greatest(c.at, r.at) DESC NULLS LAST, w.workflow_id
 LIMIT 1

-- name: monitor_lane_run_with_work
-- The newest of a workflow's runs whose model lane did work: a model wave, or
-- lane time spent generating. A rerun that found nothing to do has neither.
-- Each run is probed through its own index entries (waves_run,
-- lane_intervals_run_time), newest run first: EXISTS ... OR EXISTS is planned
-- as a hashed scan of every wave in the database on each status read (figures
-- in docs/benchmarks.md, "Status & prune"). A workflow without model steps
-- reads none of them.
SELECT r.run_id
  FROM interp.runs r
 WHERE r.workflow_id = %(workflow_id)s
   AND EXISTS (SELECT 1 FROM interp.steps s JOIN interp.actors a ON a.name = s.actor
                WHERE s.workflow_id = %(workflow_id)s AND a.kind = 'model')
   AND ((SELECT true FROM interp.waves v
          WHERE v.run_id = r.run_id AND v.model IS NOT NULL LIMIT 1)
        OR (SELECT true FROM interp.lane_intervals li
             WHERE li.run_id = r.run_id AND li.lane = 'model' AND li.cause = 'generating'
             LIMIT 1))
 ORDER BY r.run_id DESC
 LIMIT 1

-- name: status_read_settings
-- For the status read's transaction only (inside a caller's transaction: until
-- that one ends): no JIT. interp.step_status costs
-- little to run, but the planner scales its row estimates by the pages of
-- subject_state and checkpoints: after a prune and a busy hour, dead tuples
-- push its cost estimate past jit_above_cost, and compiling then takes far
-- longer than the query itself (docs/benchmarks.md, "Status after a prune").
SELECT set_config('jit', 'off', true)

-- name: prune_analyze
-- After a prune that deleted rows: fresh statistics for the tables it changed,
-- so no plan is chosen from the counts before it (autovacuum comes later).
ANALYZE interp.checkpoints, interp.checkpoint_totals, interp.checkpoint_minutes,
        interp.prompts, interp.lane_intervals, interp.utilisation
