-- Views and functions for ops: progress, velocity, stalls, dead letters,
-- breakers, model switches and model-lane utilisation (issue 6, docs/ops.md).
--
-- Why rollups: `interp status` must answer in well under 200 ms with 10M
-- checkpoints and 1M subjects. Counting done subjects per step from raw
-- checkpoints, or subjects per status from subject_state, scans millions of
-- rows (measured in bench/bench_status.py). So three small tables are kept up
-- to date by STATEMENT-level triggers with transition tables: one trigger call
-- per engine statement (a wave's whole commit is one statement), never one per
-- row. Each backend writes its own rows (shard = pg_backend_pid()), so two
-- workers committing waves of the same step never wait on each other's
-- counter row and cannot deadlock on it; readers sum the shards.
-- Deleting checkpoints (prune) leaves the rollups alone on purpose: progress
-- and velocity history stay exact after pruning.

-- ---------------------------------------------------------------- rollups

-- Checkpoints per (workflow, step, outcome, ok), all time.
CREATE TABLE interp.checkpoint_totals (
    workflow_id integer NOT NULL,
    step        integer NOT NULL,
    outcome     text NOT NULL,
    ok          boolean NOT NULL,
    shard       integer NOT NULL DEFAULT 0,
    n           bigint NOT NULL DEFAULT 0,   -- checkpoints
    subjects    bigint NOT NULL DEFAULT 0,   -- first successful checkpoint of a subject at the step
    first_at    timestamptz,                 -- earliest finished_at
    last_at     timestamptz,                 -- latest finished_at
    PRIMARY KEY (workflow_id, step, outcome, ok, shard)
);

-- Checkpoints per minute (of finished_at): velocity and its history.
CREATE TABLE interp.checkpoint_minutes (
    workflow_id integer NOT NULL,
    minute      timestamptz NOT NULL,
    step        integer NOT NULL,
    outcome     text NOT NULL,
    ok          boolean NOT NULL,
    shard       integer NOT NULL DEFAULT 0,
    n           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, minute, step, outcome, ok, shard)
);

-- Subjects per (workflow, step, status); step 0 stands for "no step" (ended).
CREATE TABLE interp.subject_counts (
    workflow_id integer NOT NULL,
    step        integer NOT NULL,
    status      text NOT NULL,
    shard       integer NOT NULL DEFAULT 0,
    n           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, step, status, shard)
);

CREATE FUNCTION interp.rollup_checkpoints_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- ORDER BY: rows are locked in key order, whatever the batch holds.
    INSERT INTO interp.checkpoint_totals AS t
           (workflow_id, step, outcome, ok, shard, n, subjects, first_at, last_at)
    SELECT r.workflow_id, r.step, r.outcome, r.ok, pg_backend_pid(), count(*),
           -- Successful passes. The unique index on ok checkpoints makes this one per
           -- subject and step in a workflow without cycles; a subject that passes a
           -- step twice through a cycle counts twice. No lookup into checkpoints:
           -- a correlated lookup here was quadratic on a table without statistics.
           count(*) FILTER (WHERE r.ok),
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

CREATE TRIGGER checkpoints_rollup AFTER INSERT ON interp.checkpoints
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION interp.rollup_checkpoints_insert();

CREATE FUNCTION interp.rollup_checkpoints_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM interp.checkpoint_totals;
    DELETE FROM interp.checkpoint_minutes;
    RETURN NULL;
END $$;

CREATE TRIGGER checkpoints_rollup_truncate AFTER TRUNCATE ON interp.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION interp.rollup_checkpoints_truncate();

-- One function for the three events; each trigger names only the transition
-- tables its event has, and plpgsql plans a branch only when it runs.
CREATE FUNCTION interp.rollup_subject_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO interp.subject_counts AS t (workflow_id, step, status, shard, n)
        SELECT r.workflow_id, coalesce(r.step, 0), r.status, pg_backend_pid(), count(*)
          FROM new_rows r GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (workflow_id, step, status, shard) DO UPDATE SET n = t.n + excluded.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO interp.subject_counts AS t (workflow_id, step, status, shard, n)
        SELECT d.workflow_id, d.step, d.status, pg_backend_pid(), sum(d.delta)
          FROM (SELECT r.workflow_id, coalesce(r.step, 0) AS step, r.status, 1 AS delta
                  FROM new_rows r
                UNION ALL
                SELECT r.workflow_id, coalesce(r.step, 0), r.status, -1 FROM old_rows r) d
         GROUP BY 1, 2, 3
        HAVING sum(d.delta) <> 0
         ORDER BY 1, 2, 3
        ON CONFLICT (workflow_id, step, status, shard) DO UPDATE SET n = t.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO interp.subject_counts AS t (workflow_id, step, status, shard, n)
        SELECT r.workflow_id, coalesce(r.step, 0), r.status, pg_backend_pid(), -count(*)
          FROM old_rows r GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (workflow_id, step, status, shard) DO UPDATE SET n = t.n + excluded.n;
    ELSE  -- TRUNCATE
        DELETE FROM interp.subject_counts;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER subject_state_count_insert AFTER INSERT ON interp.subject_state
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION interp.rollup_subject_state();
CREATE TRIGGER subject_state_count_update AFTER UPDATE ON interp.subject_state
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION interp.rollup_subject_state();
CREATE TRIGGER subject_state_count_delete AFTER DELETE ON interp.subject_state
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION interp.rollup_subject_state();
CREATE TRIGGER subject_state_count_truncate AFTER TRUNCATE ON interp.subject_state
    FOR EACH STATEMENT EXECUTE FUNCTION interp.rollup_subject_state();

-- Recompute every rollup from the raw tables (after bulk loads with triggers
-- disabled, or if in doubt). It blocks writers of the two tables while it runs.
-- Checkpoints already pruned are gone from the recount: run it before pruning.
CREATE FUNCTION interp.rebuild_ops_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE interp.checkpoints, interp.subject_state IN SHARE MODE;
    DELETE FROM interp.checkpoint_totals;
    DELETE FROM interp.checkpoint_minutes;
    DELETE FROM interp.subject_counts;
    INSERT INTO interp.checkpoint_totals
           (workflow_id, step, outcome, ok, shard, n, subjects, first_at, last_at)
    SELECT workflow_id, step, outcome, ok, 0, count(*), count(*) FILTER (WHERE ok),
           min(finished_at), max(finished_at)
      FROM interp.checkpoints
     GROUP BY 1, 2, 3, 4;
    INSERT INTO interp.checkpoint_minutes (workflow_id, minute, step, outcome, ok, shard, n)
    SELECT workflow_id, date_trunc('minute', finished_at), step, outcome, ok, 0, count(*)
      FROM interp.checkpoints GROUP BY 1, 2, 3, 4, 5;
    INSERT INTO interp.subject_counts (workflow_id, step, status, shard, n)
    SELECT workflow_id, coalesce(step, 0), status, 0, count(*)
      FROM interp.subject_state GROUP BY 1, 2, 3;
END $$;

-- Fold the shard rows of backends that have gone into shard 0, so the rollups
-- stay small. Live backends' rows are left alone: moving a row that its
-- backend may be updating right now could deadlock with that backend's wave.
CREATE FUNCTION interp.compact_ops_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS (DELETE FROM interp.checkpoint_totals WHERE shard <> 0
                 AND shard NOT IN (SELECT pid FROM pg_stat_activity) RETURNING *)
    INSERT INTO interp.checkpoint_totals AS t
           (workflow_id, step, outcome, ok, shard, n, subjects, first_at, last_at)
    SELECT workflow_id, step, outcome, ok, 0, sum(n), sum(subjects), min(first_at), max(last_at)
      FROM d GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (workflow_id, step, outcome, ok, shard) DO UPDATE
       SET n = t.n + excluded.n, subjects = t.subjects + excluded.subjects,
           first_at = least(t.first_at, excluded.first_at),
           last_at = greatest(t.last_at, excluded.last_at);
    WITH d AS (DELETE FROM interp.checkpoint_minutes WHERE shard <> 0
                 AND shard NOT IN (SELECT pid FROM pg_stat_activity) RETURNING *)
    INSERT INTO interp.checkpoint_minutes AS t (workflow_id, minute, step, outcome, ok, shard, n)
    SELECT workflow_id, minute, step, outcome, ok, 0, sum(n)
      FROM d GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (workflow_id, minute, step, outcome, ok, shard) DO UPDATE SET n = t.n + excluded.n;
    WITH d AS (DELETE FROM interp.subject_counts WHERE shard <> 0
                 AND shard NOT IN (SELECT pid FROM pg_stat_activity) RETURNING *)
    INSERT INTO interp.subject_counts AS t (workflow_id, step, status, shard, n)
    SELECT workflow_id, step, status, 0, sum(n)
      FROM d GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (workflow_id, step, status, shard) DO UPDATE SET n = t.n + excluded.n;
    DELETE FROM interp.subject_counts WHERE n = 0 AND shard = 0;
END $$;

-- Databases that already hold runtime data start with correct rollups.
SELECT interp.rebuild_ops_rollups();

-- Lane utilisation per run, and model events per run.
CREATE INDEX waves_run ON interp.waves (run_id) INCLUDE (model, busy_ms);
CREATE INDEX model_events_run ON interp.model_events (run_id, at);

-- ---------------------------------------------------------------- per step

-- Everything `interp status` shows for one step, in one place, so the SQL an
-- operator runs and the command agree. Definitions (docs/ops.md):
--   done      subjects with a successful (ok) checkpoint at the step
--   waiting   subjects at the step with status ready (including retry backoff)
--   oldest_due_at  the longest-due ready subject's next_attempt_at (NULL: none due)
--   leased    subjects at the step held by a wave now
--   dead      subjects dead-lettered at the step
--   reached   done + waiting + leased + dead
--   velocity  ok checkpoints per minute since max(now - velocity window
--             rounded down to the minute, first checkpoint of the workflow),
--             over at least one minute
--   eta_s     (waiting + leased) / velocity; NULL when velocity is 0
--   stalled   work is due (ready and past its backoff) or leased, the workflow
--             is not paused, and nothing happened for the stall window: no
--             checkpoint at the step (for model steps: at any model step of
--             the workflow, since one lane serves them all) and no subject
--             became due there within the window.
CREATE FUNCTION interp.step_status(p_workflow integer,
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
), st AS (
    SELECT s.execution_order AS step, s.name, s.kind, s.actor, a.kind AS actor_kind,
           h.state AS breaker
      FROM interp.steps s
      LEFT JOIN interp.actors a ON a.name = s.actor
      LEFT JOIN interp.actor_health h ON h.actor = s.actor
     WHERE s.workflow_id = p_workflow
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
), cnt AS (
    SELECT c.step,
           sum(c.n) FILTER (WHERE c.status = 'ready') AS waiting,
           sum(c.n) FILTER (WHERE c.status = 'leased') AS leased,
           sum(c.n) FILTER (WHERE c.status = 'dead') AS dead
      FROM interp.subject_counts c WHERE c.workflow_id = p_workflow
     GROUP BY c.step
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
            AND (b.oldest_ready <= now() OR b.leased > 0)
            AND coalesce(now() - greatest(b.activity_at,
                                          CASE WHEN b.oldest_ready <= now() THEN b.oldest_ready END)
                         > p_stall_window, false)) AS is_stalled,
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
            WHEN j.breaker = 'open' THEN 'breaker open'
            WHEN j.is_stalled THEN 'stalled'
            WHEN j.leased > 0 OR (j.velocity > 0 AND j.waiting > 0) THEN 'running'
            WHEN j.waiting > 0 THEN 'waiting'
            ELSE 'idle' END
  FROM judged j
 ORDER BY j.step
$$;

-- Progress of every workflow, step by step.
CREATE VIEW interp.step_progress AS
SELECT s.workflow_id, s.step, s.name, s.actor, s.reached, s.done, s.waiting, s.leased, s.dead,
       s.errors, s.by_outcome, s.last_checkpoint_at, s.velocity_per_min, s.eta_s, s.state
  FROM interp.workflows w CROSS JOIN LATERAL interp.step_status(w.workflow_id) s;

-- Steps with work but no progress for the window (default 10 minutes).
CREATE FUNCTION interp.stalled_steps(p_window interval DEFAULT '10 minutes')
RETURNS TABLE (workflow_id integer, step integer, name text, actor text, waiting bigint,
               leased bigint, last_checkpoint_at timestamptz, oldest_due_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.workflow_id, s.step, s.name, s.actor, s.waiting, s.leased,
           s.last_checkpoint_at, s.oldest_due_at
      FROM interp.workflows w CROSS JOIN LATERAL interp.step_status(w.workflow_id, p_window) s
     WHERE s.stalled
$$;

-- Subjects due or leased whose state has not changed for the window: the
-- individual subjects behind a stall (a scan of subject_state: an ops query).
CREATE FUNCTION interp.stalled_subjects(p_window interval DEFAULT '10 minutes')
RETURNS TABLE (workflow_id integer, subject_id text, step integer, status text,
               since timestamptz, attempts integer, lease_owner text,
               lease_expires timestamptz, last_error text)
LANGUAGE sql STABLE AS $$
    SELECT s.workflow_id, s.subject_id, s.step, s.status,
           CASE WHEN s.status = 'ready' THEN greatest(s.next_attempt_at, s.updated_at)
                ELSE s.updated_at END,
           s.attempts, s.lease_owner, s.lease_expires, s.last_error
      FROM interp.subject_state s
      JOIN interp.workflows w ON w.workflow_id = s.workflow_id AND NOT w.paused
     WHERE (s.status = 'ready' AND s.next_attempt_at <= now() - p_window
            AND s.updated_at <= now() - p_window)
        OR (s.status = 'leased' AND (s.updated_at <= now() - p_window
                                     OR s.lease_expires < now()))
$$;

-- Velocity history: checkpoints per minute per step.
CREATE VIEW interp.step_velocity AS
SELECT m.workflow_id, m.step, m.minute,
       sum(m.n) FILTER (WHERE m.ok)::bigint AS done,
       coalesce(sum(m.n) FILTER (WHERE NOT m.ok), 0)::bigint AS errors,
       jsonb_object_agg(m.outcome, m.n) AS by_outcome
  FROM (SELECT workflow_id, step, minute, outcome, ok, sum(n) AS n
          FROM interp.checkpoint_minutes GROUP BY 1, 2, 3, 4, 5) m
 GROUP BY m.workflow_id, m.step, m.minute;

-- Dead letters: subjects that ran out of attempts, with their last error.
CREATE VIEW interp.dead_letters AS
SELECT s.workflow_id, s.subject_id, s.step, st.name AS step_name, s.attempts, s.last_outcome,
       s.last_error, s.updated_at AS dead_since, c.finished_at AS last_attempt_at,
       c.error AS last_checkpoint_error, c.run_id, c.worker_id
  FROM interp.subject_state s
  LEFT JOIN interp.steps st ON st.workflow_id = s.workflow_id AND st.execution_order = s.step
  LEFT JOIN LATERAL (
        SELECT c.finished_at, c.error, c.run_id, c.worker_id FROM interp.checkpoints c
         WHERE c.workflow_id = s.workflow_id AND c.subject_id = s.subject_id
         ORDER BY c.finished_at DESC, c.checkpoint_id DESC LIMIT 1) c ON true
 WHERE s.status = 'dead';

-- Circuit breakers, with the steps that use each actor.
CREATE VIEW interp.breakers AS
SELECT h.actor, a.kind, h.state, h.consecutive_failures, h.opened_at, h.probe_owner,
       h.last_error, h.updated_at,
       (SELECT array_agg(s.workflow_id || ':' || s.execution_order ORDER BY 1)
          FROM interp.steps s WHERE s.actor = h.actor) AS steps
  FROM interp.actor_health h
  LEFT JOIN interp.actors a ON a.name = h.actor;

-- Model loads and switches, with the gap since the lane's previous event.
CREATE VIEW interp.model_switches AS
SELECT e.event_id, r.workflow_id, e.run_id, e.worker_id, e.event, e.from_model, e.model,
       e.duration_ms, e.detail, e.at,
       extract(epoch FROM e.at - lag(e.at) OVER (PARTITION BY e.run_id ORDER BY e.at, e.event_id))
           * 1000 AS ms_since_previous
  FROM interp.model_events e
  LEFT JOIN interp.runs r ON r.run_id = e.run_id;

-- Model-lane utilisation per run: the share of the run's wall time that the
-- model spent generating (busy_ms of model waves), and what it lost to loads.
CREATE VIEW interp.model_lane AS
SELECT r.run_id, r.workflow_id, r.worker_id, r.host, r.status, r.started_at,
       coalesce(r.finished_at, now()) AS until,
       extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at) * 1000 AS wall_ms,
       w.model_waves, coalesce(w.busy_ms, 0) AS busy_ms,
       CASE WHEN r.started_at < coalesce(r.finished_at, now())
            THEN coalesce(w.busy_ms, 0)
                 / (extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at) * 1000)
       END AS duty_cycle,
       coalesce(e.switches, 0) AS switches, coalesce(e.loads, 0) AS loads,
       coalesce(e.load_ms, 0) AS load_ms, e.loaded_model
  FROM interp.runs r
  LEFT JOIN LATERAL (
        SELECT count(*) AS model_waves, sum(v.busy_ms) AS busy_ms
          FROM interp.waves v WHERE v.run_id = r.run_id AND v.model IS NOT NULL) w ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE me.event = 'switch') AS switches,
               count(*) FILTER (WHERE me.event IN ('load', 'switch')) AS loads,
               sum(me.duration_ms) FILTER (WHERE me.event IN ('load', 'switch')) AS load_ms,
               (SELECT CASE WHEN l.event IN ('load', 'switch') THEN l.model END
                  FROM interp.model_events l
                 WHERE l.run_id = r.run_id AND l.event IN ('load', 'switch', 'evict')
                 ORDER BY l.at DESC, l.event_id DESC LIMIT 1) AS loaded_model
          FROM interp.model_events me WHERE me.run_id = r.run_id) e ON true;

-- Where the GPU sat idle: gaps between consecutive model waves of a run.
CREATE VIEW interp.model_lane_gaps AS
SELECT v.run_id, v.workflow_id, v.wave_id, v.step, v.model,
       lag(v.model) OVER w AS previous_model,
       lag(v.finished_at) OVER w AS idle_from, v.started_at AS idle_until,
       extract(epoch FROM v.started_at - lag(v.finished_at) OVER w) * 1000 AS idle_ms
  FROM interp.waves v
 WHERE v.model IS NOT NULL AND v.started_at IS NOT NULL
WINDOW w AS (PARTITION BY v.run_id ORDER BY v.started_at, v.wave_id);
