-- The engine's queries, by name. Code asks for them with Q["name"].
-- Placeholders are psycopg's %(name)s; {braces} are filled with
-- psycopg.sql composition (identifiers and author-written SQL only, never
-- subject data).

-- name: admit
-- Admits what the entry point's query returns and is not admitted yet.
-- The subquery q is the entry point's query, written by the workflow author
-- (no braces in these comments: psycopg.sql formatting fills them even here,
-- and author SQL must never land inside a comment). Its optional column
-- priority (an integer, default 0) is read from the row as JSON, so a query
-- without that column needs no other statement; a subject returned twice
-- keeps its highest priority. admitted_by_run: the run admitting (NULL outside one).
INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step, status, priority,
                                  admitted_by_run)
SELECT %(workflow_id)s, a.subject_id, %(entry_point)s, %(first_step)s, 'ready', a.priority,
       %(run_id)s::bigint
  FROM (SELECT q.subject_id::text AS subject_id,
               max(coalesce((to_jsonb(q) ->> 'priority')::integer, 0)) AS priority
          FROM ({admit}) AS q GROUP BY 1) AS a
 WHERE NOT EXISTS (SELECT 1 FROM interp.subject_state s
                    WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = a.subject_id)
 LIMIT %(limit)s
ON CONFLICT DO NOTHING
RETURNING subject_id

-- name: continue_visits
-- A subject admitted again (ops deleted its state to re-run it) goes on
-- counting visits after its last checkpoint, so its old checkpoints stay and
-- the new ones never collide with them. One set-based statement over the
-- admitted ids: a correlated lookup per admitted row was quadratic when
-- interp.checkpoints had no statistics.
UPDATE interp.subject_state s
   SET visits = prev.next_visit
  FROM (SELECT c.subject_id, max(c.visit) + 1 AS next_visit
          FROM interp.checkpoints c
         WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = ANY(%(ids)s)
         GROUP BY c.subject_id) AS prev
 WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = prev.subject_id

-- name: workflow_paused_and_version
SELECT paused, version FROM interp.workflows WHERE workflow_id = %(workflow_id)s

-- name: ready_steps
-- Ready work per step, counted up to %(cap)s: one bounded probe of the
-- subject_state_ready index per step, so the cost does not grow with the
-- queue (a full count of 100k subjects before every wave was most of a run).
-- Only work of at least %(min_priority)s counts (the worker's --priority-at-least).
SELECT s.execution_order AS step, r.n AS ready
  FROM interp.steps s
 CROSS JOIN LATERAL (
       SELECT count(*) AS n FROM (
              SELECT 1 FROM interp.subject_state q
               WHERE q.workflow_id = s.workflow_id AND q.step = s.execution_order
                 AND q.status = 'ready' AND q.priority >= %(min_priority)s
                 AND q.next_attempt_at <= now()
               LIMIT %(cap)s) AS x) AS r
 WHERE s.workflow_id = %(workflow_id)s AND r.n > 0
 ORDER BY s.execution_order

-- name: anything_pending
-- Is any subject of at least %(min_priority)s still on its way (ready now or
-- later, or leased)?
SELECT EXISTS (SELECT 1 FROM interp.subject_state
                WHERE workflow_id = %(workflow_id)s AND status = 'ready'
                  AND priority >= %(min_priority)s)
    OR EXISTS (SELECT 1 FROM interp.subject_state
                WHERE workflow_id = %(workflow_id)s AND status = 'leased'
                  AND priority >= %(min_priority)s) AS pending

-- name: reap_expired_leases
-- A lease that ran out goes back to the queue. Clearing wave_id fences the
-- late commit of the worker that held it. Each expiry is counted (reaps, reset
-- by every commit); the %(reaps_per_attempt)s-th at one step charges the
-- subject a failed attempt, with an error checkpoint, and dead-letters it after
-- the step's max_attempts (3 if the step is gone), so a subject that kills
-- every worker that runs it ends instead of looping. Rows a committing worker
-- holds are skipped: they are not expired for long.
WITH expired AS (
    SELECT s.subject_id, s.step, s.visits, s.attempts, s.wave_id,
           s.reaps + 1 >= %(reaps_per_attempt)s AS charged,
           coalesce(st.max_attempts, 3) AS max_attempts
      FROM interp.subject_state s
      LEFT JOIN interp.steps st
        ON st.workflow_id = s.workflow_id AND st.execution_order = s.step
     WHERE s.workflow_id = %(workflow_id)s AND s.status = 'leased' AND s.lease_expires < now()
       FOR UPDATE OF s SKIP LOCKED
), cp AS (
    INSERT INTO interp.checkpoints
        (workflow_id, subject_id, step, visit, attempt, ok, outcome, error, started_at,
         finished_at, wave_id, run_id, worker_id)
    SELECT %(workflow_id)s, e.subject_id, e.step, e.visits, e.attempts + 1, false, 'ERROR',
           %(error)s, now(), now(), e.wave_id, %(run_id)s, %(worker_id)s
      FROM expired e
     WHERE e.charged
)
UPDATE interp.subject_state s
   SET status = CASE WHEN e.charged AND e.attempts + 1 >= e.max_attempts THEN 'dead'
                     ELSE 'ready' END,
       attempts = e.attempts + e.charged::int,
       reaps = CASE WHEN e.charged THEN 0 ELSE s.reaps + 1 END,
       last_outcome = CASE WHEN e.charged THEN 'ERROR' ELSE s.last_outcome END,
       last_error = CASE WHEN e.charged THEN %(error)s ELSE s.last_error END,
       lease_owner = NULL, lease_expires = NULL, wave_id = NULL, updated_at = now()
  FROM expired e
 WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = e.subject_id
RETURNING s.subject_id, e.charged

-- name: claim_wave
-- Claims up to %(limit)s ready subjects of one step, sets a lease, records the
-- wave, and returns each subject with its row from the subject table. One
-- round trip. The subject table, its key and the key's type are identifiers
-- from the workflow definition. A subject whose lease expired before (reaps > 0:
-- its worker died on it) runs in a wave of its own, so a subject that kills
-- its worker does not take its wave-mates down with it again. Highest
-- priority first (at least %(min_priority)s), oldest due first within one: the
-- order of the subject_state_ready index.
WITH wave AS (
    SELECT nextval('interp.waves_wave_id_seq') AS wave_id
), picked AS (
    SELECT subject_id, reaps FROM interp.subject_state
     WHERE workflow_id = %(workflow_id)s AND step = %(step)s AND status = 'ready'
       AND priority >= %(min_priority)s AND next_attempt_at <= now()
       AND NOT (SELECT paused FROM interp.workflows WHERE workflow_id = %(workflow_id)s)
     ORDER BY priority DESC, next_attempt_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT subject_id FROM picked
     WHERE NOT EXISTS (SELECT 1 FROM picked WHERE reaps > 0)
        OR subject_id = (SELECT subject_id FROM picked WHERE reaps > 0 LIMIT 1)
), leased AS (
    UPDATE interp.subject_state s
       SET status = 'leased', lease_owner = %(worker_id)s,
           lease_expires = now() + make_interval(secs => %(lease_s)s),
           wave_id = (SELECT wave_id FROM wave), updated_at = now()
      FROM chosen
     WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = chosen.subject_id
    RETURNING s.subject_id, s.attempts, s.visits, s.outputs, s.wave_id
), recorded AS (
    INSERT INTO interp.waves (wave_id, workflow_id, step, run_id, size, model)
    SELECT (SELECT wave_id FROM wave), %(workflow_id)s, %(step)s, %(run_id)s, count(*), %(model)s
      FROM leased HAVING count(*) > 0
)
SELECT l.subject_id, l.attempts, l.visits, l.outputs, l.wave_id,
       CASE WHEN %(with_rows)s THEN to_jsonb(t) END AS row,
       -- which pass through this step (Subject.visit_of_step): its earlier
       -- successes here, plus one (the checkpoints_one_success index's prefix)
       (SELECT count(*) FROM interp.checkpoints c
         WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = l.subject_id
           AND c.step = %(step)s AND c.ok) + 1 AS visit_of_step
  FROM leased l
  LEFT JOIN {subject_table} t ON %(with_rows)s AND t.{subject_key} = l.subject_id::{key_type}

-- name: lock_inline_wave
-- Gates and SQL actors run inside one transaction: the row locks are the
-- lease, and a crash rolls the whole wave back. In claim_wave's order.
SELECT subject_id, attempts, visits, CASE WHEN %(with_outputs)s THEN outputs END AS outputs
  FROM interp.subject_state
 WHERE workflow_id = %(workflow_id)s AND step = %(step)s AND status = 'ready'
   AND priority >= %(min_priority)s AND next_attempt_at <= now()
   AND NOT (SELECT paused FROM interp.workflows WHERE workflow_id = %(workflow_id)s)
 ORDER BY priority DESC, next_attempt_at
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED

-- name: next_wave_id
SELECT nextval('interp.waves_wave_id_seq') AS wave_id

-- name: record_inline_wave
-- An inline wave is recorded once, when it is done (it commits with its results).
-- started is the worker's clock, sent at sent_at: shifted onto the database's
-- clock like a checkpoint's times. It ends now, at this statement: not now(),
-- which is the transaction's start, before the wave was even locked.
INSERT INTO interp.waves (wave_id, workflow_id, step, run_id, size, model, claimed_at,
                          started_at, finished_at, committed, busy_ms, commit_token)
SELECT %(wave_id)s, %(workflow_id)s, %(step)s, %(run_id)s, %(size)s, NULL, t.started,
       t.started, statement_timestamp(), %(committed)s, %(busy_ms)s, %(token)s::uuid
  FROM (SELECT least(statement_timestamp(), %(started)s::timestamptz
                     + (statement_timestamp() - %(sent_at)s::timestamptz)) AS started) t

-- name: subject_rows
-- The subject table's rows for a wave. The table, its key and the key's type
-- are identifiers from the workflow definition.
SELECT t.{subject_key}::text AS subject_id, to_jsonb(t) AS row
  FROM {subject_table} t
 WHERE t.{subject_key} = ANY(%(ids)s::{key_type}[])

-- name: fence_wave
-- The subjects of a leased wave whose lease this worker still holds; locks
-- them until commit. Anything missing was reclaimed: its result is dropped.
SELECT subject_id
  FROM interp.subject_state
 WHERE workflow_id = %(workflow_id)s AND subject_id = ANY(%(ids)s)
   AND status = 'leased' AND lease_owner = %(worker_id)s AND wave_id = %(wave_id)s
   AND lease_expires > now()
   FOR UPDATE

-- name: commit_results
-- Writes every checkpoint of the wave and advances subject_state along the
-- transitions, in one statement (the caller has fenced the ids).
WITH v AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(visit)s::int[], %(attempt)s::int[], %(ok)s::bool[],
        %(outcome)s::text[], %(output)s::text[], %(error)s::text[],
        %(started)s::timestamptz[], %(finished)s::timestamptz[],
        %(model)s::text[], %(model_sha256)s::text[], %(seed)s::bigint[], %(sampling)s::text[],
        %(prompt_tokens)s::int[], %(completion_tokens)s::int[], %(gen_ms)s::float8[],
        %(next_step)s::int[], %(status)s::text[], %(attempts)s::int[], %(visit_inc)s::int[],
        %(delay_s)s::float8[], %(prompt_sha256)s::text[], %(prompt)s::text[],
        %(batch_width)s::int[], %(prompt_tokens_reused)s::int[], %(forced_tokens)s::int[])
      AS v(subject_id, visit, attempt, ok, outcome, output, error, started, finished,
           model, model_sha256, seed, sampling, prompt_tokens, completion_tokens, gen_ms,
           next_step, status, attempts, visit_inc, delay_s, prompt_sha256, prompt,
           batch_width, prompt_tokens_reused, forced_tokens)
),
-- include: apply_results

-- fragment: apply_results
-- The tail of a wave's commit, after a CTE v with one row per subject
-- (the columns of commit_results' unnest): the checkpoints and the
-- subject_state moves in one statement, so they commit together.
-- Planner note, measured (docs/benchmarks.md, Engine throughput): after
-- five waves psycopg prepares these statements and PostgreSQL may switch to a
-- generic plan. Joined on the key alone, the rate per subject stays level from
-- waves of 1,000 to 5,000. Adding `s.subject_id = ANY(ids)` looked better in
-- a one-off EXPLAIN but the prepared statement then tested the whole array
-- for each row: a gate wave of 5,000 went from 0.1 s to 1.3 s.
-- Times: v's are the worker's clock, sent at sent_at; they are stored on the
-- database's clock (shifted by statement_timestamp() - sent_at), because stall
-- and velocity compare them with the database's now().
-- A model checkpoint's rendered prompt is stored once per distinct sha256.
prompts AS (
    INSERT INTO interp.prompts (sha256, body)
    SELECT DISTINCT ON (v.prompt_sha256) v.prompt_sha256, v.prompt
      FROM v WHERE v.prompt_sha256 IS NOT NULL AND v.prompt IS NOT NULL
    ON CONFLICT (sha256) DO NOTHING
),
cp AS (
    INSERT INTO interp.checkpoints
        (workflow_id, subject_id, step, visit, attempt, ok, outcome, output, error,
         started_at, finished_at, wave_id, run_id, worker_id, model, model_sha256, seed,
         sampling, prompt_tokens, completion_tokens, gen_ms, prompt_sha256, batch_width,
         prompt_tokens_reused, forced_tokens)
    SELECT %(workflow_id)s, v.subject_id, %(step)s, v.visit, v.attempt, v.ok, v.outcome,
           v.output::jsonb, v.error,
           v.started + (statement_timestamp() - %(sent_at)s::timestamptz),
           v.finished + (statement_timestamp() - %(sent_at)s::timestamptz),
           %(wave_id)s, %(run_id)s,
           %(worker_id)s, v.model, v.model_sha256, v.seed, v.sampling::jsonb,
           v.prompt_tokens, v.completion_tokens, v.gen_ms, v.prompt_sha256, v.batch_width,
           v.prompt_tokens_reused, v.forced_tokens
      FROM v
)
UPDATE interp.subject_state s
   SET step = v.next_step, status = v.status, attempts = v.attempts,
       visits = s.visits + v.visit_inc,
       outputs = CASE WHEN v.ok AND v.output IS NOT NULL
                      THEN s.outputs || jsonb_build_object(%(step)s::text, v.output::jsonb)
                      ELSE s.outputs END,
       last_outcome = v.outcome, last_error = v.error,
       next_attempt_at = now() + make_interval(secs => v.delay_s), reaps = 0,
       lease_owner = NULL, lease_expires = NULL, wave_id = NULL, updated_at = now()
  FROM v
 WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = v.subject_id

-- name: gate_wave
-- A gate's whole wave in one statement: the gate, its outcomes, the
-- transitions, the checkpoints and the subject_state moves, with no row
-- going to the client and back. The CTE g is the step's gate SQL, written
-- by the workflow author (no braces in these comments: the gate is put in
-- with psycopg.sql formatting); the caller has locked the ids.
-- It writes only when every subject takes the plain road: one gate row at
-- most, a valid outcome with a transition, under the visit limit. Otherwise
-- it writes nothing (0 rows) and the engine runs the wave the general way
-- (gate, then commit_results), so the rules for odd cases live in one place,
-- interpreter/wave_rules.py.
WITH g AS MATERIALIZED (
{gate}
), r AS (
    SELECT g.subject_id::text AS subject_id,
           -- actor_api.outcome_of is the same rule on the general road: NULL and ''
           -- are the default, anything else its text (a boolean TRUE or FALSE)
           upper(coalesce(nullif(g.outcome::text, ''), %(default_outcome)s)) AS outcome
      FROM g
), w AS (
    SELECT * FROM unnest(%(ids)s::text[], %(visit)s::int[], %(attempt)s::int[])
      AS w(subject_id, visit, attempt)
), t AS (
    SELECT * FROM unnest(%(t_outcome)s::text[], %(t_next)s::int[]) AS t(outcome, next_step)
), routed AS (
    SELECT w.subject_id, w.visit, w.attempt, coalesce(r.outcome, %(default_outcome)s) AS outcome,
           (x.outcome IS NOT NULL OR star.outcome IS NOT NULL) AS found,
           CASE WHEN x.outcome IS NOT NULL THEN x.next_step ELSE star.next_step END AS next_step
      FROM w
      LEFT JOIN r ON r.subject_id = w.subject_id
      LEFT JOIN t AS x ON x.outcome = coalesce(r.outcome, %(default_outcome)s)
      LEFT JOIN t AS star ON star.outcome = '*'
), odd AS (
    SELECT count(*) <> cardinality(%(ids)s::text[])
           OR coalesce(bool_or(NOT found OR outcome !~ '^[A-Z][A-Z0-9_]*$'
                               OR visit + 1 >= %(max_visits)s), true) AS is_odd
      FROM routed
), v AS (
    SELECT subject_id, visit, attempt, true AS ok, outcome, NULL::text AS output,
           NULL::text AS error, %(started)s::timestamptz AS started,
           -- now, on the worker's clock (apply_results shifts it back)
           %(sent_at)s::timestamptz + (clock_timestamp() - statement_timestamp()) AS finished,
           NULL::text AS model, NULL::text AS model_sha256, NULL::bigint AS seed,
           NULL::text AS sampling, NULL::int AS prompt_tokens, NULL::int AS completion_tokens,
           NULL::float8 AS gen_ms, next_step,
           CASE WHEN next_step IS NULL THEN 'done' ELSE 'ready' END AS status,
           0 AS attempts, 1 AS visit_inc, 0::float8 AS delay_s,
           NULL::text AS prompt_sha256, NULL::text AS prompt, NULL::int AS batch_width,
           NULL::int AS prompt_tokens_reused, NULL::int AS forced_tokens
      FROM routed
     WHERE NOT (SELECT is_odd FROM odd)
),
-- include: apply_results

-- name: finish_wave
-- started: when a model wave began generating (the worker's clock, sent at
-- sent_at, shifted onto the database's as a checkpoint's times are), or NULL.
UPDATE interp.waves
   SET started_at = coalesce(started_at, %(started)s::timestamptz
                                         + (statement_timestamp() - %(sent_at)s::timestamptz)),
       finished_at = now(),
       committed = %(committed)s, busy_ms = %(busy_ms)s, commit_token = %(token)s::uuid
 WHERE wave_id = %(wave_id)s

-- name: release_wave
-- Gives back a claimed wave that was not run (stop, or a prefetched wave).
UPDATE interp.subject_state
   SET status = 'ready', lease_owner = NULL, lease_expires = NULL, wave_id = NULL,
       updated_at = now()
 WHERE workflow_id = %(workflow_id)s AND wave_id = %(wave_id)s AND lease_owner = %(worker_id)s
   AND status = 'leased'

-- name: renew_leases
UPDATE interp.subject_state
   SET lease_expires = now() + make_interval(secs => %(lease_s)s)
 WHERE workflow_id = %(workflow_id)s AND wave_id = ANY(%(wave_ids)s)
   AND lease_owner = %(worker_id)s AND status = 'leased'

-- name: start_run
INSERT INTO interp.runs (workflow_id, worker_id, host, pid, definition_version, args)
VALUES (%(workflow_id)s, %(worker_id)s, %(host)s, %(pid)s, %(version)s, %(args)s)
RETURNING run_id

-- name: run_heartbeat
UPDATE interp.runs SET heartbeat_at = now() WHERE run_id = %(run_id)s

-- name: finish_run
UPDATE interp.runs SET finished_at = now(), status = %(status)s, error = %(error)s
 WHERE run_id = %(run_id)s

-- name: breaker_states
SELECT actor, state, consecutive_failures, opened_at, updated_at, probe_owner
  FROM interp.actor_health WHERE actor = ANY(%(actors)s)

-- name: breaker_lock
SELECT actor, state, consecutive_failures, recent FROM interp.actor_health
 WHERE actor = %(actor)s FOR UPDATE

-- name: breaker_write
INSERT INTO interp.actor_health (actor, state, consecutive_failures, recent, opened_at,
                                 probe_owner, last_error, updated_at)
VALUES (%(actor)s, %(state)s, %(failures)s, %(recent)s,
        CASE WHEN %(state)s = 'open' THEN now() END, NULL, %(last_error)s, now())
ON CONFLICT (actor) DO UPDATE
   SET state = EXCLUDED.state, consecutive_failures = EXCLUDED.consecutive_failures,
       recent = EXCLUDED.recent,
       opened_at = CASE WHEN EXCLUDED.state = 'open' THEN now()
                        WHEN EXCLUDED.state = 'closed' THEN NULL
                        ELSE interp.actor_health.opened_at END,
       probe_owner = NULL,
       last_error = coalesce(EXCLUDED.last_error, interp.actor_health.last_error),
       updated_at = now()

-- name: breaker_take_probe
-- One worker, and only one, may send a probe through an open breaker whose
-- cool-down has passed (or whose previous prober vanished).
UPDATE interp.actor_health
   SET state = 'half_open', probe_owner = %(worker_id)s, updated_at = now()
 WHERE actor = %(actor)s
   AND ((state = 'open' AND opened_at < now() - make_interval(secs => %(cooldown_s)s))
        OR (state = 'half_open' AND updated_at < now() - make_interval(secs => %(lease_s)s)))
RETURNING actor

-- name: model_event
INSERT INTO interp.model_events (run_id, worker_id, event, model, from_model, duration_ms,
                                 detail, at)
VALUES (%(run_id)s, %(worker_id)s, %(event)s, %(model)s, %(from_model)s, %(duration_ms)s,
        %(detail)s, %(at)s)

-- name: record_model_file
UPDATE interp.models SET sha256 = %(sha256)s, size_bytes = %(size_bytes)s, updated_at = now()
 WHERE name = %(name)s AND sha256 IS NULL

-- name: key_type
SELECT format_type(a.atttypid, a.atttypmod) AS key_type
  FROM pg_attribute a
 WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = %(key)s AND NOT a.attisdropped

-- ---------------------------------------------------------------- branch stop
-- The half-open probe is held like a lease: its owner's heartbeat renews it,
-- and the lane that took it gives it back when its wave ends without settling
-- the breaker (nothing claimed, the wave released, an error).

-- name: breaker_renew_probes
UPDATE interp.actor_health SET updated_at = now()
 WHERE actor = ANY(%(actors)s) AND state = 'half_open' AND probe_owner = %(worker_id)s

-- name: breaker_return_probe
-- Back to open with its old opened_at: the cool-down has passed, so the next
-- claim (of any worker) may take the probe at once.
UPDATE interp.actor_health SET state = 'open', probe_owner = NULL, updated_at = now()
 WHERE actor = %(actor)s AND state = 'half_open' AND probe_owner = %(worker_id)s

-- name: breaker_reset
-- Closes an actor's breaker by hand (docs/running.md, "Closing a breaker by hand").
UPDATE interp.actor_health
   SET state = 'closed', consecutive_failures = 0, recent = '', opened_at = NULL,
       probe_owner = NULL, updated_at = now()
 WHERE actor = %(actor)s
RETURNING actor

-- ---------------------------------------------------------------- branch poison

-- name: bound_statement
-- The step's timeout_s, in ms, for the author's statement that follows (a
-- gate, a SQL actor), local to the savepoint it runs in; returns the setting
-- it replaces, which unbound_statement puts back.
WITH prior AS MATERIALIZED (SELECT current_setting('statement_timeout') AS old)
SELECT old, set_config('statement_timeout', %(ms)s, true) AS ms FROM prior

-- name: unbound_statement
SELECT set_config('statement_timeout', %(old)s, true)

-- ---------------------------------------------------------------- opsfix
-- (branch opsfix: ops-facing additions)

-- name: mark_lost_runs
-- Runs of this workflow whose heartbeat is older than their lease died without
-- recording their end (SIGKILL, a lost host): the worker that reaps their
-- leases marks them lost. interp.run_status says the same to readers.
UPDATE interp.runs
   SET status = 'lost',
       error = coalesce(error, 'lost: no heartbeat for longer than the run''s lease')
 WHERE workflow_id = %(workflow_id)s AND status = 'running' AND run_id <> %(run_id)s
   AND heartbeat_at < now() - interp.run_lease(args)

-- ---------------------------------------------------------------- limits
-- Per-actor rate and concurrency limits (interpreter/limits.py), in the
-- claim's transaction.

-- name: limits_take
-- Locks the actor's bucket until the claim's transaction ends, refilled at
-- %(rate)s tokens a second up to %(burst)s for the time since its last refill;
-- a new actor's bucket starts full. The upsert locks and reads the newest
-- row, whichever claim committed it.
INSERT INTO interp.actor_limits AS l (actor, tokens, refilled_at)
VALUES (%(actor)s, %(burst)s, clock_timestamp())
ON CONFLICT (actor) DO UPDATE
   SET tokens = least(%(burst)s::float8, l.tokens + %(rate)s::float8 * greatest(
                    0, extract(epoch FROM clock_timestamp() - l.refilled_at)::float8)),
       refilled_at = greatest(l.refilled_at, clock_timestamp())
RETURNING tokens

-- name: limits_leased
-- The actor's subjects leased now, by every worker, over every step that uses
-- it. Run after limits_take, as a statement of its own, so that its snapshot
-- sees the leases of the claim that held the lock before.
SELECT count(*) AS leased
  FROM interp.steps st
  JOIN interp.subject_state s ON s.workflow_id = st.workflow_id AND s.step = st.execution_order
 WHERE st.actor = %(actor)s AND s.status = 'leased'

-- name: limits_spend
UPDATE interp.actor_limits SET tokens = tokens - %(n)s WHERE actor = %(actor)s

-- ---------------------------------------------------------------- branch rest

-- name: visits_of_step
-- Which pass through a step each subject of an inline script wave is on
-- (Subject.visit_of_step): its earlier successes at the step, plus one.
SELECT i.subject_id,
       (SELECT count(*) FROM interp.checkpoints c
         WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = i.subject_id
           AND c.step = %(step)s AND c.ok) + 1 AS visit_of_step
  FROM unnest(%(ids)s::text[]) AS i(subject_id)
