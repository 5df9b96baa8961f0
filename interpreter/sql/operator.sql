-- The operator verbs: `interp retry`, `interp rewind`, `interp cancel`
-- (interpreter/operator_actions.py, docs/ops.md "Retry, rewind and cancel").
-- Code asks for them with Q["name"]. Placeholders are psycopg's %(name)s;
-- {braces} are filled with psycopg.sql composition (identifiers from the
-- workflow's definition, and the operator's own --where predicate, which runs
-- only in operator_where_ids, in a READ ONLY transaction of its own).

-- name: operator_step_known
-- Whether a step is defined, and whether subjects sit at it (a deleted step
-- can still hold subjects: they may be selected, to move them elsewhere).
SELECT EXISTS (SELECT 1 FROM interp.steps
                WHERE workflow_id = %(workflow_id)s AND execution_order = %(step)s) AS defined,
       EXISTS (SELECT 1 FROM interp.subject_state
                WHERE workflow_id = %(workflow_id)s AND step = %(step)s) AS occupied

-- name: operator_key_type
-- The subject key's type without its modifier (varchar, not varchar(5)): a
-- cast to the type with its length would cut a longer id down to another
-- subject's id instead of refusing it.
SELECT format_type(a.atttypid, NULL) AS key_type
  FROM pg_attribute a
 WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = %(key)s AND NOT a.attisdropped

-- name: operator_canonical_ids
-- The ids as the engine stores them: each given id cast to the subject key's
-- type (without its modifier: operator_key_type) and back to text (so 007 is
-- 7 for an integer key, and an upper-case uuid is the stored lower-case one);
-- an id that is no value of the type fails.
SELECT i.given, (i.given::{key_type})::text AS subject_id
  FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS i(given, n)
 ORDER BY i.n

-- name: operator_missing_subjects
-- The given ids that are not subjects of the workflow.
SELECT i.subject_id
  FROM unnest(%(ids)s::text[]) AS i(subject_id)
 WHERE NOT EXISTS (SELECT 1 FROM interp.subject_state s
                    WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = i.subject_id)

-- name: operator_where_timeout
-- The --where predicate's time limit, for its read-only transaction alone.
SELECT set_config('statement_timeout', %(ms)s, true)

-- name: operator_where_ids
-- The admitted subjects of the workflow whose row in the subject table the
-- operator's predicate accepts. Run in a READ ONLY transaction of its own,
-- with a statement timeout, on a connection closed afterwards; never inside a
-- writing statement. Bound parameters make it one statement: a predicate that
-- tries to end this statement and start another is refused by the server.
SELECT t.{subject_key}::text AS subject_id
  FROM {subject_table} AS t
 WHERE ({where})
   AND EXISTS (SELECT 1 FROM interp.subject_state s
                WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = t.{subject_key}::text)

-- fragment: operator_select
-- The selection, and the subjects of it that the verb applies to. Every
-- criterion that is NULL is left out; those given must all hold.
--   sel      subjects the selection picks, whatever their status
--   matched  those in a status the verb applies to (%(eligible)s)
--   locked   those that can move now, locked until the action commits: not held
--            by a running wave (a live lease, or a row that a wave's transaction
--            has locked: SKIP LOCKED). A lease that has expired belongs to a
--            dead or hung worker, whose late commit is fenced: it can move.
-- The outcome at a step is that of the subject's latest successful
-- checkpoint there (its highest visit: the checkpoints_one_success index).
sel AS (
    SELECT s.subject_id, s.status
      FROM interp.subject_state s
     WHERE s.workflow_id = %(workflow_id)s
       AND (%(ids)s::text[] IS NULL
            OR s.subject_id IN (SELECT unnest(%(ids)s::text[])))
       AND (%(step)s::int IS NULL OR s.step = %(step)s::int)
       AND (%(statuses)s::text[] IS NULL OR s.status = ANY(%(statuses)s::text[]))
       AND (%(error_like)s::text IS NULL OR s.last_error ILIKE %(error_like)s::text)
       AND (%(outcome_step)s::int IS NULL OR (
            SELECT c.outcome FROM interp.checkpoints c
             WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = s.subject_id
               AND c.step = %(outcome_step)s::int AND c.ok
             ORDER BY c.visit DESC LIMIT 1) = %(outcome)s::text)
), matched AS (
    SELECT subject_id FROM sel WHERE status = ANY(%(eligible)s::text[])
)

-- fragment: operator_lock
, locked AS (
    SELECT s.subject_id, s.status AS from_status, s.step AS from_step,
           s.visits AS from_visits
      FROM interp.subject_state s
     WHERE s.workflow_id = %(workflow_id)s
       AND s.subject_id IN (SELECT subject_id FROM matched)
       AND s.status = ANY(%(eligible)s::text[])
       AND (s.status <> 'leased' OR s.lease_expires < now())
       FOR UPDATE OF s SKIP LOCKED
)

-- fragment: operator_record
-- The action's record, in the statement (and so the transaction) that moved
-- the subjects: the counts, and each subject moved with where it came from.
, action AS (
    INSERT INTO interp.operator_actions
        (verb, workflow_id, to_step, selection, reason, os_user, client_host,
         selected, matched, skipped, changed)
    SELECT %(verb)s, %(workflow_id)s, %(to_step)s::int, %(selection)s, %(reason)s,
           %(os_user)s, %(client_host)s,
           (SELECT count(*) FROM sel), (SELECT count(*) FROM matched),
           (SELECT count(*) FROM matched) - (SELECT count(*) FROM moved),
           (SELECT count(*) FROM moved)
    RETURNING *
), touched AS (
    INSERT INTO interp.operator_action_subjects
        (action_id, workflow_id, subject_id, from_status, from_step, from_visits,
         to_status, to_step)
    SELECT a.action_id, %(workflow_id)s, m.subject_id, m.from_status, m.from_step,
           m.from_visits, m.to_status, m.to_step
      FROM moved m CROSS JOIN action a
)
SELECT a.action_id, a.at, a.db_role, a.db_user, a.selected, a.matched, a.skipped, a.changed,
       coalesce((SELECT array_agg(x.subject_id ORDER BY x.subject_id)
                   FROM (SELECT m.subject_id FROM moved m
                          ORDER BY m.subject_id LIMIT %(sample)s) x), '{}') AS sample
  FROM action a

-- name: operator_retry
-- Dead (or cancelled) subjects back to the queue at the step where they
-- stopped, attempts reset. A new visit: the new attempts' checkpoints
-- (attempt 1, 2, ...) never meet the old ones of the same step.
WITH
-- include: operator_select
-- include: operator_lock
, moved AS (
    UPDATE interp.subject_state s
       SET status = 'ready', attempts = 0, reaps = 0, visits = s.visits + 1,
           last_error = NULL, next_attempt_at = now(),
           lease_owner = NULL, lease_expires = NULL, wave_id = NULL, updated_at = now()
      FROM locked l
     WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = l.subject_id
    RETURNING s.subject_id, l.from_status, l.from_step, l.from_visits,
              s.status AS to_status, s.step AS to_step
)
-- include: operator_record

-- name: operator_rewind
-- Subjects back to step %(to_step)s, as if a transition had just brought them
-- there: ready, attempts reset, a new visit (so the checkpoints to come continue
-- the subject's visit numbering, and a SQL actor may key its effects by visit).
-- Checkpoints, outputs and the effects of later steps stay as they are.
WITH
-- include: operator_select
-- include: operator_lock
, moved AS (
    UPDATE interp.subject_state s
       SET status = 'ready', step = %(to_step)s::int, attempts = 0, reaps = 0,
           visits = s.visits + 1, last_error = NULL, next_attempt_at = now(),
           lease_owner = NULL, lease_expires = NULL, wave_id = NULL, updated_at = now()
      FROM locked l
     WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = l.subject_id
    RETURNING s.subject_id, l.from_status, l.from_step, l.from_visits,
              s.status AS to_status, s.step AS to_step
)
-- include: operator_record

-- name: operator_cancel
-- Subjects stop where they are: status cancelled, their step kept, their lease
-- (an expired one) cleared, which fences a late commit of its worker.
WITH
-- include: operator_select
-- include: operator_lock
, moved AS (
    UPDATE interp.subject_state s
       SET status = 'cancelled', lease_owner = NULL, lease_expires = NULL, wave_id = NULL,
           updated_at = now()
      FROM locked l
     WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = l.subject_id
    RETURNING s.subject_id, l.from_status, l.from_step, l.from_visits,
              s.status AS to_status, s.step AS to_step
)
-- include: operator_record

-- name: operator_dry_run
-- What the verb would do, changing nothing and locking nothing: the counts,
-- with a live lease standing for "held by a running wave", and a sample.
WITH
-- include: operator_select
SELECT (SELECT count(*) FROM sel) AS selected,
       (SELECT count(*) FROM matched) AS matched,
       (SELECT count(*) FROM matched m JOIN interp.subject_state s
           ON s.workflow_id = %(workflow_id)s AND s.subject_id = m.subject_id
         WHERE s.status = 'leased' AND s.lease_expires >= now()) AS skipped,
       (SELECT count(*) FROM sel WHERE NOT (status = ANY(%(eligible)s::text[]))) AS ineligible,
       coalesce((SELECT array_agg(x.subject_id ORDER BY x.subject_id)
                   FROM (SELECT m.subject_id FROM matched m
                          ORDER BY m.subject_id LIMIT %(sample)s) x), '{}') AS sample,
       (SELECT coalesce(jsonb_object_agg(b.status, b.n), '{}'::jsonb)
          FROM (SELECT status, count(*) AS n FROM sel GROUP BY status) b) AS by_status

-- name: operator_actions_of_subject
-- The actions that moved one subject, oldest first (`interp trace`).
SELECT a.action_id, a.at, a.verb, a.reason, a.db_role, a.db_user, a.os_user,
       t.from_status, t.from_step, t.from_visits, t.to_status, t.to_step
  FROM interp.operator_action_subjects t
  JOIN interp.operator_actions a ON a.action_id = t.action_id
 WHERE t.workflow_id = %(workflow_id)s AND t.subject_id = %(subject_id)s
 ORDER BY a.at, a.action_id

-- name: operator_recent_actions
-- A workflow's latest actions (`interp status --json`, the dashboard's events).
SELECT action_id, at, verb, to_step, selection, reason, db_role, db_user, os_user,
       selected, matched, skipped, changed
  FROM interp.operator_actions
 WHERE workflow_id = %(workflow_id)s
 ORDER BY at DESC, action_id DESC
 LIMIT %(limit)s

-- name: operator_cancelled_by_step
-- Cancelled subjects per step, from the rollup (`interp status --json`'s steps).
SELECT step, sum(n)::bigint AS n FROM interp.subject_counts
 WHERE workflow_id = %(workflow_id)s AND status = 'cancelled'
 GROUP BY step HAVING sum(n) <> 0
