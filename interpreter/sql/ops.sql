-- The ops queries (status, trace, velocity, prune) and the statements of a
-- workflow export, by name. Code asks for them with Q["name"]. Placeholders
-- are psycopg's %(name)s; {braces} are filled with psycopg.sql composition.
--
-- The export_* blocks are not run here: they are the text of an exported
-- definition file, filled with psycopg.sql.Literal values and written out as
-- they stand, so they carry no comments of their own.

-- name: monitor_workflow
SELECT workflow_id, name, paused, version, subject_table, subject_key
  FROM interp.workflows WHERE workflow_id = %(workflow_id)s

-- name: monitor_workflows
SELECT w.workflow_id, w.name, w.paused, w.version,
       (SELECT count(*) FROM interp.steps s WHERE s.workflow_id = w.workflow_id) AS steps,
       coalesce((SELECT sum(c.n) FROM interp.subject_counts c
                  WHERE c.workflow_id = w.workflow_id), 0)::bigint AS subjects
  FROM interp.workflows w ORDER BY w.workflow_id

-- name: monitor_now
SELECT now() AS now

-- name: monitor_step_status
-- The per-step figures: the SQL function reads the trigger-maintained rollups.
SELECT * FROM interp.step_status(%(workflow_id)s, make_interval(secs => %(stall_s)s),
                                 make_interval(secs => %(velocity_s)s))

-- name: monitor_subject_totals
SELECT coalesce(sum(n), 0)::bigint AS subjects,
       coalesce(sum(n) FILTER (WHERE status = 'done'), 0)::bigint AS done,
       coalesce(sum(n) FILTER (WHERE status = 'ready'), 0)::bigint AS waiting,
       coalesce(sum(n) FILTER (WHERE status = 'leased'), 0)::bigint AS leased,
       coalesce(sum(n) FILTER (WHERE status = 'dead'), 0)::bigint AS dead,
       -- stopped by an operator (interp cancel): neither active nor ended
       coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0)::bigint AS cancelled
  FROM interp.subject_counts WHERE workflow_id = %(workflow_id)s

-- name: monitor_checkpoint_totals
SELECT coalesce(sum(n), 0)::bigint AS n,
       coalesce(sum(n) FILTER (WHERE NOT ok), 0)::bigint AS errors
  FROM interp.checkpoint_totals WHERE workflow_id = %(workflow_id)s

-- name: monitor_completion_rate
-- Subjects finishing per minute: ok checkpoints in the velocity window whose
-- (step, outcome) leads to the end (an explicit NULL transition, the '*'
-- fallback to NULL, or no transition at all).
WITH since AS (
    SELECT greatest(date_trunc('minute', now() - make_interval(secs => %(velocity_s)s)),
                    (SELECT min(first_at) FROM interp.checkpoint_totals
                      WHERE workflow_id = %(workflow_id)s)) AS t0
), recent AS (
    SELECT m.step, m.outcome, sum(m.n) AS n
      FROM interp.checkpoint_minutes m, since
     WHERE m.workflow_id = %(workflow_id)s AND m.ok
       AND m.minute >= date_trunc('minute', since.t0)
     GROUP BY 1, 2
)
SELECT coalesce(sum(r.n) FILTER (WHERE
           CASE WHEN t.from_step IS NOT NULL THEN t.to_step IS NULL
                WHEN a.from_step IS NOT NULL THEN a.to_step IS NULL
                ELSE true END), 0) * 60.0
       / greatest(60.0, extract(epoch FROM now() - (SELECT t0 FROM since))) AS rate
  FROM recent r
  LEFT JOIN interp.step_transitions t ON t.workflow_id = %(workflow_id)s
       AND t.from_step = r.step AND t.outcome = r.outcome
  LEFT JOIN interp.step_transitions a ON a.workflow_id = %(workflow_id)s
       AND a.from_step = r.step AND a.outcome = '*'

-- name: monitor_breakers
SELECT h.actor, h.state, h.consecutive_failures, h.opened_at, h.last_error
  FROM interp.actor_health h
 WHERE h.actor IN (SELECT actor FROM interp.steps WHERE workflow_id = %(workflow_id)s)
 ORDER BY h.actor

-- name: monitor_runs
-- status 'lost': the run's heartbeat is older than its lease (interp.run_status).
SELECT run_id, worker_id, host, pid, interp.run_status(status, heartbeat_at, args) AS status,
       started_at, heartbeat_at, finished_at,
       extract(epoch FROM now() - heartbeat_at) AS heartbeat_age_s
  FROM interp.runs WHERE workflow_id = %(workflow_id)s
 ORDER BY (interp.run_status(status, heartbeat_at, args) = 'running') DESC, run_id DESC
 LIMIT 10

-- name: monitor_model_lanes
SELECT run_id, worker_id, status, loaded_model, wall_ms, busy_ms, model_waves,
       duty_cycle, switches, loads, load_ms
  FROM interp.model_lane WHERE run_id = ANY(%(run_ids)s) ORDER BY run_id DESC

-- name: monitor_model_events
SELECT e.event_id, e.run_id, e.event, e.from_model, e.model, e.duration_ms, e.at
  FROM interp.model_events e
 WHERE e.run_id IN (SELECT run_id FROM interp.runs WHERE workflow_id = %(workflow_id)s)
 ORDER BY e.at DESC, e.event_id DESC LIMIT 20

-- name: velocity_minutes
-- The chart's time axis: the last whole minutes, oldest first.
SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                       date_trunc('minute', now()), interval '1 minute') AS minute

-- name: velocity_counts
SELECT step, minute, sum(n)::bigint AS n FROM interp.checkpoint_minutes
 WHERE workflow_id = %(workflow_id)s AND ok AND minute >= %(since)s GROUP BY 1, 2

-- name: velocity_step_names
SELECT execution_order, name FROM interp.steps WHERE workflow_id = %(workflow_id)s
 ORDER BY execution_order

-- name: overview_finished_minutes
-- Subjects that finished, per minute since %(since)s: ok checkpoints whose
-- (step, outcome) leads to the end, as in monitor_completion_rate.
SELECT m.minute, sum(m.n)::bigint AS n
  FROM interp.checkpoint_minutes m
  LEFT JOIN interp.step_transitions t ON t.workflow_id = m.workflow_id
       AND t.from_step = m.step AND t.outcome = m.outcome
  LEFT JOIN interp.step_transitions a ON a.workflow_id = m.workflow_id
       AND a.from_step = m.step AND a.outcome = '*'
 WHERE m.workflow_id = %(workflow_id)s AND m.ok AND m.minute >= %(since)s
   AND CASE WHEN t.from_step IS NOT NULL THEN t.to_step IS NULL
            WHEN a.from_step IS NOT NULL THEN a.to_step IS NULL
            ELSE true END
 GROUP BY m.minute

-- name: overview_model_tokens_minutes
-- The model steps' completion tokens and generation time, per minute of
-- finished_at since %(since)s. Walks the (workflow_id, step, finished_at)
-- index one model step at a time.
SELECT date_trunc('minute', c.finished_at) AS minute,
       sum(c.completion_tokens)::bigint AS tokens, sum(c.gen_ms) AS gen_ms
  FROM interp.steps s
  JOIN interp.actors a ON a.name = s.actor AND a.kind = 'model'
  JOIN interp.checkpoints c ON c.workflow_id = s.workflow_id AND c.step = s.execution_order
 WHERE s.workflow_id = %(workflow_id)s AND c.finished_at >= %(since)s
   AND c.completion_tokens IS NOT NULL
 GROUP BY 1

-- name: trace_subject_state
SELECT s.subject_id, s.entry_point, s.step, st.name AS step_name, s.status, s.attempts,
       s.visits, s.last_outcome, s.last_error, s.next_attempt_at, s.lease_owner,
       s.lease_expires, s.admitted_at, s.admitted_by_run, s.updated_at
  FROM interp.subject_state s
  LEFT JOIN interp.steps st ON st.workflow_id = s.workflow_id
       AND st.execution_order = s.step
 WHERE s.workflow_id = %(workflow_id)s AND s.subject_id = %(subject_id)s

-- name: trace_checkpoints
SELECT c.checkpoint_id, c.step, st.name AS step_name, c.visit, c.attempt, c.ok, c.outcome,
       c.error, c.started_at, c.finished_at,
       round((extract(epoch FROM c.finished_at - c.started_at) * 1000)::numeric, 1)
           AS duration_ms,
       c.wave_id, c.run_id, c.worker_id, c.model, c.model_sha256, c.seed, c.sampling,
       c.prompt_tokens, c.completion_tokens, c.gen_ms, c.prompt_sha256, c.batch_width,
       c.prompt_tokens_reused, c.forced_tokens, c.output
  FROM interp.checkpoints c
  LEFT JOIN interp.steps st ON st.workflow_id = c.workflow_id
       AND st.execution_order = c.step
 WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = %(subject_id)s
 ORDER BY c.started_at, c.finished_at, c.checkpoint_id

-- name: trace_prompts
-- The rendered prompts behind a subject's checkpoints (a pruned one is absent).
SELECT p.sha256, p.body FROM interp.prompts p
 WHERE p.sha256 IN (SELECT c.prompt_sha256 FROM interp.checkpoints c
                     WHERE c.workflow_id = %(workflow_id)s AND c.subject_id = %(subject_id)s
                       AND c.prompt_sha256 IS NOT NULL)

-- name: prune_cutoff
SELECT now() - %(older_than)s AS cutoff

-- name: prune_batch
-- One chunk of ended subjects, in key order after the last chunk: counts
-- the checkpoints older than the cutoff that are not the last of their
-- (subject, step), and deletes them unless this is a dry run.
WITH subj AS (
    SELECT subject_id FROM interp.subject_state
     WHERE workflow_id = %(wf)s AND subject_id > %(after)s
       AND status IN ('done', 'dead', 'cancelled')
     ORDER BY subject_id LIMIT %(subjects)s
), ranked AS (
    SELECT c.checkpoint_id, c.finished_at,
           row_number() OVER (PARTITION BY c.subject_id, c.step
                              ORDER BY c.finished_at DESC, c.checkpoint_id DESC) AS rn
      FROM interp.checkpoints c JOIN subj ON c.subject_id = subj.subject_id
     WHERE c.workflow_id = %(wf)s
), doomed AS (
    SELECT checkpoint_id FROM ranked WHERE rn > 1 AND finished_at < %(cutoff)s
), gone AS (
    DELETE FROM interp.checkpoints
     WHERE %(delete)s AND checkpoint_id IN (SELECT checkpoint_id FROM doomed)
    RETURNING prompt_sha256
)
SELECT (SELECT count(*) FROM subj) AS subjects,
       (SELECT max(subject_id) FROM subj) AS last_subject,
       (SELECT count(*) FROM doomed) AS candidates,
       (SELECT count(*) FROM gone) AS deleted,
       (SELECT coalesce(array_agg(DISTINCT prompt_sha256), '{}')
          FROM gone WHERE prompt_sha256 IS NOT NULL) AS prompts

-- name: prune_prompts
-- Prompts that no checkpoint uses any more, among those whose checkpoints the
-- last prune_batch deleted (a separate statement: that batch's deletes are
-- visible here, not inside its own statement).
DELETE FROM interp.prompts p
 WHERE p.sha256 = ANY(%(shas)s)
   AND NOT EXISTS (SELECT 1 FROM interp.checkpoints c WHERE c.prompt_sha256 = p.sha256)

-- name: prune_compact_rollups
SELECT interp.compact_ops_rollups()

-- name: export_workflow
INSERT INTO interp.workflows (workflow_id, name, description, subject_table, subject_key)
VALUES ({workflow_id}, {name}, {description}, {subject_table}, {subject_key})
ON CONFLICT (workflow_id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
  subject_table = EXCLUDED.subject_table, subject_key = EXCLUDED.subject_key;

-- name: export_model
INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, chat_format, sampling, parallel, api_key_env, ca_bundle, prefix_cache_mb)
VALUES ({name}, {source}, {n_gpu_layers}, {n_ctx}, {n_threads}, {chat_format}, {sampling}, {parallel}, {api_key_env}, {ca_bundle}, {prefix_cache_mb})
ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, n_gpu_layers = EXCLUDED.n_gpu_layers,
  n_ctx = EXCLUDED.n_ctx, n_threads = EXCLUDED.n_threads, chat_format = EXCLUDED.chat_format, sampling = EXCLUDED.sampling,
  parallel = EXCLUDED.parallel, api_key_env = EXCLUDED.api_key_env, ca_bundle = EXCLUDED.ca_bundle,
  prefix_cache_mb = EXCLUDED.prefix_cache_mb;

-- name: export_actor
INSERT INTO interp.actors (name, kind, target, params)
VALUES ({name}, {kind}, {target}, {params})
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;

-- name: export_template
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ({name}, {version}, {body})
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;

-- name: export_drop_other_steps
DELETE FROM interp.steps WHERE workflow_id = {workflow_id} AND execution_order NOT IN ({keep});

-- name: export_step
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES ({workflow_id}, {number}, {name}, {kind}, {actor}, {template}, {template_version}, {gate_sql}, {output_schema}, {outcome_field}, {max_attempts}, {timeout_s}, {params})
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;

-- name: export_drop_transitions
DELETE FROM interp.step_transitions WHERE workflow_id = {workflow_id};

-- name: export_transition
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES ({workflow_id}, {from_step}, {outcome}, {to_step});

-- name: export_entry_point
INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step, enabled)
VALUES ({workflow_id}, {name}, {admit_sql}, {first_step}, {enabled})
ON CONFLICT (workflow_id, name) DO UPDATE SET admit_sql = EXCLUDED.admit_sql,
  first_step = EXCLUDED.first_step, enabled = EXCLUDED.enabled;

-- (branch live) The progress view of `interp run`.

-- name: progress_model_tokens
-- The completion tokens that one run's model steps finished in the last
-- %(window_s)s seconds, and the seconds that window spans: it starts no earlier
-- than the run, so a run younger than the window is not diluted. Walks the
-- (workflow_id, step, finished_at) index one step at a time.
WITH r AS (
    SELECT run_id, workflow_id,
           greatest(started_at, now() - make_interval(secs => %(window_s)s)) AS t0
      FROM interp.runs WHERE run_id = %(run_id)s
)
SELECT (SELECT coalesce(sum(c.completion_tokens), 0)
          FROM interp.steps s
          JOIN interp.checkpoints c ON c.workflow_id = s.workflow_id
                                   AND c.step = s.execution_order
         WHERE s.workflow_id = r.workflow_id AND c.finished_at >= r.t0
           AND c.run_id = r.run_id)::bigint AS tokens,
       extract(epoch FROM now() - r.t0)::float8 AS seconds
  FROM r
