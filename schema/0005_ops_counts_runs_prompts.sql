-- What ops see must match what happened (docs/ops.md):
--   * a subject counts once as done at a step, however often a loop brings it back;
--   * a run killed without a goodbye (SIGKILL, a lost host) shows as lost, not
--     running for ever;
--   * a step whose subjects are all leased and that never checkpointed can stall,
--     and subjects parked at a step that was deleted are seen;
--   * a model load is counted once, not again as the switch it caused;
--   * the audit keeps what a model was asked: the prompt's sha256 on the
--     checkpoint, the text once per distinct sha256.

-- ---------------------------------------------------------------- done = distinct subjects

-- checkpoint_totals.subjects counts a subject's FIRST successful checkpoint at a
-- step (in checkpoint order, whatever the visit), so `done` is distinct subjects.
-- The lookup is one probe of checkpoints_one_success (workflow, subject: a
-- subject's few checkpoints) per row of the statement. `c.step + 0`, on purpose:
-- with a plain `c.step =`, a planner without statistics on checkpoints chose
-- checkpoints_step_time (workflow, step), which reads every checkpoint of the
-- step for each row: 64,000 rows took minutes instead of 0.3 s. (Turning
-- seqscans off for the function instead made every commit pay for JIT.)
CREATE OR REPLACE FUNCTION interp.rollup_checkpoints_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- ORDER BY: rows are locked in key order, whatever the batch holds.
    INSERT INTO interp.checkpoint_totals AS t
           (workflow_id, step, outcome, ok, shard, n, subjects, first_at, last_at)
    SELECT r.workflow_id, r.step, r.outcome, r.ok, pg_backend_pid(), count(*),
           count(*) FILTER (WHERE r.ok AND NOT EXISTS (
                SELECT 1 FROM interp.checkpoints c
                 WHERE c.workflow_id = r.workflow_id AND c.subject_id = r.subject_id
                   AND c.step + 0 = r.step AND c.ok AND c.checkpoint_id < r.checkpoint_id)),
           min(r.finished_at), max(r.finished_at)
      FROM new_rows r
     GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3, 4
    ON CONFLICT (workflow_id, step, outcome, ok, shard) DO UPDATE
       SET n = t.n + excluded.n,
           subjects = t.subjects + excluded.subjects,
           first_at = least(t.first_at, excluded.first_at),
           last_at = greatest(t.last_at, excluded.last_at);

    INSERT INTO interp.checkpoint_minutes AS t (workflow_id, minute, step, outcome, ok, shard, n)
    SELECT r.workflow_id, date_trunc('minute', r.finished_at), r.step, r.outcome, r.ok,
           pg_backend_pid(), count(*)
      FROM new_rows r
     GROUP BY 1, 2, 3, 4, 5
     ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (workflow_id, minute, step, outcome, ok, shard) DO UPDATE
       SET n = t.n + excluded.n;
    RETURN NULL;
END $$;

-- The same rule when rebuilding from the raw checkpoints.
CREATE OR REPLACE FUNCTION interp.rebuild_ops_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE interp.checkpoints, interp.subject_state IN SHARE MODE;
    DELETE FROM interp.checkpoint_totals;
    DELETE FROM interp.checkpoint_minutes;
    DELETE FROM interp.subject_counts;
    INSERT INTO interp.checkpoint_totals
           (workflow_id, step, outcome, ok, shard, n, subjects, first_at, last_at)
    SELECT c.workflow_id, c.step, c.outcome, c.ok, 0, count(*), count(f.checkpoint_id),
           min(c.finished_at), max(c.finished_at)
      FROM interp.checkpoints c
      LEFT JOIN (SELECT DISTINCT ON (workflow_id, subject_id, step) checkpoint_id
                   FROM interp.checkpoints WHERE ok
                  ORDER BY workflow_id, subject_id, step, checkpoint_id) f
             ON f.checkpoint_id = c.checkpoint_id
     GROUP BY 1, 2, 3, 4;
    INSERT INTO interp.checkpoint_minutes (workflow_id, minute, step, outcome, ok, shard, n)
    SELECT workflow_id, date_trunc('minute', finished_at), step, outcome, ok, 0, count(*)
      FROM interp.checkpoints GROUP BY 1, 2, 3, 4, 5;
    INSERT INTO interp.subject_counts (workflow_id, step, status, shard, n)
    SELECT workflow_id, coalesce(step, 0), status, 0, count(*)
      FROM interp.subject_state GROUP BY 1, 2, 3;
END $$;

-- Existing databases: recount `subjects` only (pruning may have removed raw
-- checkpoints, so n and the per-minute history are left as they are).
UPDATE interp.checkpoint_totals SET subjects = 0 WHERE subjects <> 0;
INSERT INTO interp.checkpoint_totals AS t
       (workflow_id, step, outcome, ok, shard, n, subjects, first_at, last_at)
SELECT f.workflow_id, f.step, f.outcome, true, 0, 0, count(*), NULL, NULL
  FROM (SELECT DISTINCT ON (workflow_id, subject_id, step) workflow_id, step, outcome
          FROM interp.checkpoints WHERE ok
         ORDER BY workflow_id, subject_id, step, checkpoint_id) f
 GROUP BY 1, 2, 3
ON CONFLICT (workflow_id, step, outcome, ok, shard) DO UPDATE SET subjects = excluded.subjects;

-- ---------------------------------------------------------------- lost runs

ALTER TABLE interp.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE interp.runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'finished', 'stopped', 'failed', 'lost'));

-- A run's lease: its args.lease_s (what `interp run` was started with), else the
-- default of 60 s. A live run beats every lease_s/3 seconds.
CREATE FUNCTION interp.run_lease(p_args jsonb) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT make_interval(secs => coalesce((p_args->>'lease_s')::float8, 60))
$$;

-- What a run is now: a running (or lost) run whose heartbeat is older than its
-- lease is lost; one that beats again (it was only cut off) is running again.
CREATE FUNCTION interp.run_status(p_status text, p_heartbeat timestamptz, p_args jsonb)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_status NOT IN ('running', 'lost') THEN p_status
                WHEN p_heartbeat < now() - interp.run_lease(p_args) THEN 'lost'
                ELSE 'running' END
$$;

-- ---------------------------------------------------------------- model lane

-- A switch to a model that had to be loaded carries the load's duration: the
-- load is counted from the load event alone. A lost run's wall time ends at its
-- last heartbeat.
CREATE OR REPLACE VIEW interp.model_lane AS
SELECT r.run_id, r.workflow_id, r.worker_id, r.host,
       interp.run_status(r.status, r.heartbeat_at, r.args) AS status, r.started_at,
       u.until,
       extract(epoch FROM u.until - r.started_at) * 1000 AS wall_ms,
       w.model_waves, coalesce(w.busy_ms, 0) AS busy_ms,
       CASE WHEN r.started_at < u.until
            THEN coalesce(w.busy_ms, 0) / (extract(epoch FROM u.until - r.started_at) * 1000)
       END AS duty_cycle,
       coalesce(e.switches, 0) AS switches, coalesce(e.loads, 0) AS loads,
       coalesce(e.load_ms, 0) AS load_ms, e.loaded_model
  FROM interp.runs r
  CROSS JOIN LATERAL (
        SELECT coalesce(r.finished_at,
                        CASE WHEN interp.run_status(r.status, r.heartbeat_at, r.args) = 'lost'
                             THEN r.heartbeat_at ELSE now() END) AS until) u
  LEFT JOIN LATERAL (
        SELECT count(*) AS model_waves, sum(v.busy_ms) AS busy_ms
          FROM interp.waves v WHERE v.run_id = r.run_id AND v.model IS NOT NULL) w ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE me.event = 'switch') AS switches,
               count(*) FILTER (WHERE me.event = 'load') AS loads,
               sum(me.duration_ms) FILTER (WHERE me.event = 'load') AS load_ms,
               (SELECT CASE WHEN l.event IN ('load', 'switch') THEN l.model END
                  FROM interp.model_events l
                 WHERE l.run_id = r.run_id AND l.event IN ('load', 'switch', 'evict')
                 ORDER BY l.at DESC, l.event_id DESC LIMIT 1) AS loaded_model
          FROM interp.model_events me WHERE me.run_id = r.run_id) e ON true;

-- ---------------------------------------------------------------- prompts

-- The rendered prompt of a model checkpoint, once per distinct text: body is
-- the JSON array [system, user] whose sha256 the checkpoint records.
CREATE TABLE interp.prompts (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE interp.checkpoints ADD COLUMN prompt_sha256 text;
-- Prune asks "does any checkpoint still use this prompt"; only model
-- checkpoints carry one, so other inserts never touch this index.
CREATE INDEX checkpoints_prompt ON interp.checkpoints (prompt_sha256)
    WHERE prompt_sha256 IS NOT NULL;

-- ---------------------------------------------------------------- per step

-- As in 0002, with three changes (docs/ops.md):
--   * stalled also when subjects are leased and nothing happened since the
--     newest lease began (a step that never checkpointed, its leases renewed
--     by a live heartbeat, was never flagged);
--   * a step that no longer exists but still holds subjects is listed (name
--     '(deleted step)', state 'missing step', stalled while subjects wait there);
--   * done counts distinct subjects (the rollup above).
CREATE OR REPLACE FUNCTION interp.step_status(p_workflow integer,
                                              p_stall_window interval DEFAULT '10 minutes',
                                              p_velocity_window interval DEFAULT '5 minutes')
RETURNS TABLE (
    workflow_id integer, step integer, name text, kind text, actor text, actor_kind text,
    reached bigint, done bigint, waiting bigint, leased bigint, dead bigint,
    errors bigint, by_outcome jsonb, last_checkpoint_at timestamptz, oldest_due_at timestamptz,
    velocity_per_min double precision, eta_s double precision,
    breaker text, stalled boolean, state text)
LANGUAGE sql STABLE AS $$
WITH wf AS (
    SELECT w.workflow_id, w.paused FROM interp.workflows w WHERE w.workflow_id = p_workflow
), cnt AS (
    SELECT c.step,
           sum(c.n) FILTER (WHERE c.status = 'ready') AS waiting,
           sum(c.n) FILTER (WHERE c.status = 'leased') AS leased,
           sum(c.n) FILTER (WHERE c.status = 'dead') AS dead
      FROM interp.subject_counts c WHERE c.workflow_id = p_workflow
     GROUP BY c.step
), defined AS (
    SELECT s.execution_order AS step, s.name, s.kind, s.actor, a.kind AS actor_kind,
           h.state AS breaker, false AS missing
      FROM interp.steps s
      LEFT JOIN interp.actors a ON a.name = s.actor
      LEFT JOIN interp.actor_health h ON h.actor = s.actor
     WHERE s.workflow_id = p_workflow
), st AS (
    SELECT * FROM defined
    UNION ALL
    SELECT cnt.step, '(deleted step)', NULL, NULL, NULL, NULL, true
      FROM cnt
     WHERE cnt.step <> 0
       AND coalesce(cnt.waiting, 0) + coalesce(cnt.leased, 0) + coalesce(cnt.dead, 0) > 0
       AND NOT EXISTS (SELECT 1 FROM defined d WHERE d.step = cnt.step)
), tot AS (
    SELECT t.step, t.outcome, bool_or(t.ok) AS ok, sum(t.n) AS n,
           sum(t.subjects) AS subjects, max(t.last_at) AS last_at, min(t.first_at) AS first_at
      FROM interp.checkpoint_totals t WHERE t.workflow_id = p_workflow
     GROUP BY t.step, t.outcome, t.ok
), per_step AS (
    SELECT tot.step,
           sum(tot.subjects) FILTER (WHERE tot.ok) AS done,
           sum(tot.n) FILTER (WHERE NOT tot.ok) AS errors,
           jsonb_object_agg(tot.outcome, tot.n ORDER BY tot.outcome) FILTER (WHERE tot.ok)
               AS by_outcome,
           max(tot.last_at) AS last_at
      FROM tot GROUP BY tot.step
), since AS (
    SELECT greatest(date_trunc('minute', now() - p_velocity_window),
                    (SELECT min(tot.first_at) FROM tot)) AS t0
), recent AS (
    SELECT m.step, sum(m.n) AS n
      FROM interp.checkpoint_minutes m, since
     WHERE m.workflow_id = p_workflow AND m.ok AND m.minute >= date_trunc('minute', since.t0)
     GROUP BY m.step
), lane AS (
    SELECT max(ps.last_at) AS last_at
      FROM per_step ps JOIN st ON st.step = ps.step WHERE st.actor_kind = 'model'
), base AS (
    SELECT st.*, coalesce(ps.done, 0)::bigint AS done, coalesce(ps.errors, 0)::bigint AS errors,
           coalesce(ps.by_outcome, '{}'::jsonb) AS by_outcome, ps.last_at,
           coalesce(cnt.waiting, 0)::bigint AS waiting, coalesce(cnt.leased, 0)::bigint AS leased,
           coalesce(cnt.dead, 0)::bigint AS dead,
           -- the ready index answers this with one probe per step
           (SELECT min(ss.next_attempt_at) FROM interp.subject_state ss
             WHERE ss.workflow_id = p_workflow AND ss.step = st.step AND ss.status = 'ready')
               AS oldest_ready,
           -- when the newest wave of the step was claimed (the claim sets updated_at;
           -- renewing a lease does not); the leased index keeps this small
           CASE WHEN coalesce(cnt.leased, 0) > 0 THEN
                (SELECT max(ss.updated_at) FROM interp.subject_state ss
                  WHERE ss.workflow_id = p_workflow AND ss.step = st.step
                    AND ss.status = 'leased') END AS leased_since,
           coalesce(recent.n, 0) * 60.0
               / greatest(60.0, extract(epoch FROM now() - (SELECT t0 FROM since)))
               AS velocity,
           CASE WHEN st.actor_kind = 'model' THEN greatest(ps.last_at, (SELECT last_at FROM lane))
                ELSE ps.last_at END AS activity_at
      FROM st
      LEFT JOIN per_step ps ON ps.step = st.step
      LEFT JOIN cnt ON cnt.step = st.step
      LEFT JOIN recent ON recent.step = st.step
), judged AS (
    SELECT b.*,
           CASE WHEN b.oldest_ready <= now() THEN b.oldest_ready END AS oldest_due,
           (NOT wf.paused
            AND ((b.missing AND b.waiting + b.leased > 0)
                 OR ((b.oldest_ready <= now() OR b.leased > 0)
                     AND coalesce(now() - greatest(
                             b.activity_at,
                             CASE WHEN b.oldest_ready <= now() THEN b.oldest_ready END,
                             b.leased_since) > p_stall_window, false)))) AS is_stalled,
           wf.paused
      FROM base b, wf
)
SELECT p_workflow, j.step, j.name, j.kind, j.actor, j.actor_kind,
       j.done + j.waiting + j.leased + j.dead, j.done, j.waiting,
       j.leased, j.dead, j.errors, j.by_outcome, j.last_at, j.oldest_due,
       round(j.velocity::numeric, 2)::double precision,
       CASE WHEN j.waiting + j.leased = 0 THEN 0::double precision
            WHEN j.velocity > 0 THEN round(((j.waiting + j.leased) * 60.0 / j.velocity)::numeric, 0)::double precision
       END,
       j.breaker, j.is_stalled,
       CASE WHEN j.paused AND j.waiting + j.leased > 0 THEN 'paused'
            WHEN j.missing THEN 'missing step'
            WHEN j.breaker = 'open' THEN 'breaker open'
            WHEN j.is_stalled THEN 'stalled'
            WHEN j.leased > 0 OR (j.velocity > 0 AND j.waiting > 0) THEN 'running'
            WHEN j.waiting > 0 THEN 'waiting'
            ELSE 'idle' END
  FROM judged j
 ORDER BY j.step
$$;
