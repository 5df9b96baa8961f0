-- Per-actor rate and concurrency limits shared by every worker, and subject
-- priorities (docs/running.md, "Limits" and "Priorities").

-- ---------------------------------------------------------------- priorities

-- A subject's priority: the entry point's `priority` column when it was
-- admitted (0 without one). Claims take the highest first, oldest due first
-- within a priority.
ALTER TABLE interp.subject_state ADD COLUMN priority integer NOT NULL DEFAULT 0;

-- The claim's index, ordered as the claim reads it: highest priority first,
-- then oldest due. It replaces 0001's (workflow_id, step, next_attempt_at)
-- rather than joining it: every transition writes this table, and each index
-- is one more insert per transition. With one priority (the default) it is
-- read exactly as the old one was; a worker's --priority-at-least is a range
-- on its third column. Rows in a retry backoff sit at the end of their
-- priority, so a claim reads past those of the priorities above the one it
-- takes from, never more.
DROP INDEX interp.subject_state_ready;
CREATE INDEX subject_state_ready
    ON interp.subject_state (workflow_id, step, priority DESC, next_attempt_at)
    WHERE status = 'ready';

-- The longest-waiting ready subject's next_attempt_at at one step, over all
-- priorities: one index probe per priority present (a loose index scan), where
-- min() over the index above would read every ready row of the step.
CREATE FUNCTION interp.oldest_ready(p_workflow integer, p_step integer)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    prio   integer;
    due    timestamptz;
    oldest timestamptz;
BEGIN
    prio := (SELECT s.priority FROM interp.subject_state s
              WHERE s.workflow_id = p_workflow AND s.step = p_step AND s.status = 'ready'
              ORDER BY s.priority DESC LIMIT 1);
    WHILE prio IS NOT NULL LOOP
        due := (SELECT s.next_attempt_at FROM interp.subject_state s
                 WHERE s.workflow_id = p_workflow AND s.step = p_step AND s.status = 'ready'
                   AND s.priority = prio
                 ORDER BY s.next_attempt_at LIMIT 1);
        oldest := least(oldest, due);
        prio := (SELECT s.priority FROM interp.subject_state s
                  WHERE s.workflow_id = p_workflow AND s.step = p_step AND s.status = 'ready'
                    AND s.priority < prio
                  ORDER BY s.priority DESC LIMIT 1);
    END LOOP;
    RETURN oldest;
END $$;

-- ---------------------------------------------------------------- limits

-- The token bucket of an actor with params.rate_per_s, one row per actor,
-- shared by every worker (interpreter/limits.py). A claim of the actor's
-- steps locks the row first (so claims of one actor follow each other),
-- refills it for the time since refilled_at, up to the burst, and takes one
-- token per subject it claims, in its own transaction. An actor with only
-- max_concurrency has a row too: its lock orders the claims that count leases.
CREATE TABLE interp.actor_limits (
    actor       text PRIMARY KEY,
    tokens      double precision NOT NULL CHECK (tokens > -1e-6),
    refilled_at timestamptz NOT NULL
);

-- Whether an actor is at its limit now: its bucket (refilled to now) holds
-- less than one token, or its leased subjects over every step that uses it
-- reach max_concurrency. Read from the actor's params as the engine reads
-- them (LimitSettings.of in interpreter/limits.py: the burst defaults to one
-- second's worth, at least 1); a param that is not a positive number is no
-- limit here (the engine refuses it).
CREATE FUNCTION interp.actor_limited(p_actor text) RETURNS boolean
LANGUAGE sql STABLE AS $$
WITH raw AS (
    SELECT CASE WHEN jsonb_typeof(a.params -> 'rate_per_s') = 'number'
                THEN nullif(greatest((a.params ->> 'rate_per_s')::float8, 0), 0) END AS rate,
           CASE WHEN jsonb_typeof(a.params -> 'rate_burst') = 'number'
                THEN nullif(greatest((a.params ->> 'rate_burst')::float8, 0), 0) END AS burst,
           CASE WHEN jsonb_typeof(a.params -> 'max_concurrency') = 'number'
                THEN nullif(greatest((a.params ->> 'max_concurrency')::float8, 0), 0)
                END AS concurrency
      FROM interp.actors a WHERE a.name = p_actor
), lim AS (
    SELECT rate, greatest(1, coalesce(burst, greatest(1, rate))) AS burst,
           -- (greatest() skips a NULL: no limit must stay NULL)
           CASE WHEN concurrency IS NOT NULL THEN greatest(1, floor(concurrency)) END
               AS max_concurrency
      FROM raw
)
SELECT coalesce(
           (lim.rate IS NOT NULL AND (
                SELECT least(lim.burst, l.tokens + lim.rate * greatest(
                           0, extract(epoch FROM now() - l.refilled_at)::float8)) < 1
                  FROM interp.actor_limits l WHERE l.actor = p_actor))
           OR (lim.max_concurrency IS NOT NULL AND (
                SELECT count(*) FROM interp.steps st
                  JOIN interp.subject_state s
                    ON s.workflow_id = st.workflow_id AND s.step = st.execution_order
                 WHERE st.actor = p_actor AND s.status = 'leased') >= lim.max_concurrency),
           false)
  FROM lim
$$;

-- ---------------------------------------------------------------- per step

-- As in 0005, with two changes (docs/ops.md):
--   * state 'limited': due work waits at the step and its actor is at its
--     rate or concurrency limit (interp.actor_limited); such a step is not
--     stalled, since it waits on purpose;
--   * oldest_due_at through interp.oldest_ready, since the ready index is now
--     ordered by priority first.
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
           -- the ready index answers this with one probe per priority
           interp.oldest_ready(p_workflow, st.step) AS oldest_ready,
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
    SELECT l.*,
           (NOT l.paused
            AND NOT l.limited
            AND ((l.missing AND l.waiting + l.leased > 0)
                 OR ((l.oldest_ready <= now() OR l.leased > 0)
                     AND coalesce(now() - greatest(
                             l.activity_at,
                             CASE WHEN l.oldest_ready <= now() THEN l.oldest_ready END,
                             l.leased_since) > p_stall_window, false)))) AS is_stalled
      FROM (SELECT b.*, wf.paused,
                   CASE WHEN b.oldest_ready <= now() THEN b.oldest_ready END AS oldest_due,
                   -- due work waits and the actor is at its rate or concurrency limit
                   CASE WHEN b.oldest_ready <= now() AND b.actor IS NOT NULL
                        THEN interp.actor_limited(b.actor) ELSE false END AS limited
              FROM base b, wf) l
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
            WHEN j.limited THEN 'limited'
            WHEN j.is_stalled THEN 'stalled'
            WHEN j.leased > 0 OR (j.velocity > 0 AND j.waiting > 0) THEN 'running'
            WHEN j.waiting > 0 THEN 'waiting'
            ELSE 'idle' END
  FROM judged j
 ORDER BY j.step
$$;

-- ---------------------------------------------------------------- timeline

-- The model lane's time held back by an actor's limit has its own cause.
ALTER TABLE interp.lane_intervals DROP CONSTRAINT lane_intervals_cause_check;
ALTER TABLE interp.lane_intervals ADD CONSTRAINT lane_intervals_cause_check
    CHECK (cause IN ('generating', 'loading', 'switching', 'waiting_claim', 'breaker',
                     'limited', 'waiting_commit', 'idle', 'paused'));
