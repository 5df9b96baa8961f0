-- Experiments and pinned template versions (interpreter/experiments.py,
-- docs/adr/0006-experiments.md). An experiment only reads production's tables
-- (checkpoints, the subject table) and writes interp.experiments and
-- interp.experiment_results.

-- name: definition_pinned_templates
-- The template versions that a workflow's steps pin (template_version not NULL).
SELECT t.name, t.version, t.body
  FROM interp.steps s
  JOIN interp.prompt_templates t ON t.name = s.template AND t.version = s.template_version
 WHERE s.workflow_id = %(workflow_id)s

-- name: experiment_template
-- One version of a template, or its newest when %(version)s is NULL.
SELECT name, version, body FROM interp.prompt_templates
 WHERE name = %(name)s AND (%(version)s::integer IS NULL OR version = %(version)s::integer)
 ORDER BY version DESC
 LIMIT 1

-- name: experiment_subjects
-- Subjects that passed the step (a successful checkpoint; the latest),
-- the ones named, or else a sample of %(sample)s ordered by a hash of
-- (%(seed)s, subject): the same seed picks the same sample. Each comes with the
-- inputs that checkpoint's wave saw: the subject's row, and every step's latest
-- output committed before that checkpoint, which is what subject_state.outputs
-- held when the wave was claimed (a step's output enters it only with a
-- successful checkpoint that has an output). The subject table, its key and the
-- key's type are identifiers from the workflow's definition.
WITH passed AS (
    SELECT DISTINCT ON (c.subject_id) c.subject_id, c.checkpoint_id, c.visit
      FROM interp.checkpoints c
     WHERE c.workflow_id = %(workflow_id)s AND c.step = %(step)s AND c.ok
       AND (%(subjects)s::text[] IS NULL OR c.subject_id = ANY(%(subjects)s::text[]))
     ORDER BY c.subject_id, c.visit DESC, c.checkpoint_id DESC
), chosen AS (
    SELECT * FROM passed
     ORDER BY md5(%(seed)s::text || ':' || subject_id), subject_id
     LIMIT %(sample)s
)
SELECT ch.subject_id, ch.checkpoint_id, ch.visit, to_jsonb(t) AS row,
       -- which pass through the step it was (Subject.visit_of_step, as claim_wave counts it)
       (SELECT count(*) FROM interp.checkpoints p
         WHERE p.workflow_id = %(workflow_id)s AND p.subject_id = ch.subject_id
           AND p.step = %(step)s AND p.ok AND p.checkpoint_id < ch.checkpoint_id) + 1
           AS visit_of_step,
       coalesce((SELECT jsonb_object_agg(o.step::text, o.output)
                   FROM (SELECT DISTINCT ON (e.step) e.step, e.output
                           FROM interp.checkpoints e
                          WHERE e.workflow_id = %(workflow_id)s
                            AND e.subject_id = ch.subject_id
                            AND e.ok AND e.output IS NOT NULL
                            AND e.checkpoint_id < ch.checkpoint_id
                          ORDER BY e.step, e.checkpoint_id DESC) o), jsonb_build_object()) AS outputs
  FROM chosen ch
  LEFT JOIN {subject_table} t ON t.{subject_key} = ch.subject_id::{key_type}
 ORDER BY ch.subject_id

-- name: experiment_start
INSERT INTO interp.experiments (workflow_id, step, changes, template_body, seed, requested,
                                os_user, host, pid)
VALUES (%(workflow_id)s, %(step)s, %(changes)s, %(template_body)s, %(seed)s, %(requested)s,
        %(os_user)s, %(host)s, %(pid)s)
RETURNING experiment_id

-- name: experiment_result
INSERT INTO interp.experiment_results
       (experiment_id, subject_id, checkpoint_id, visit, ok, outcome, output, error, tries,
        started_at, finished_at, model, model_sha256, seed, sampling, prompt_tokens,
        completion_tokens, gen_ms, prompt_sha256, batch_width)
VALUES (%(experiment_id)s, %(subject_id)s, %(checkpoint_id)s, %(visit)s, %(ok)s, %(outcome)s,
        %(output)s, %(error)s, %(tries)s, %(started_at)s, %(finished_at)s, %(model)s,
        %(model_sha256)s, %(seed)s, %(sampling)s, %(prompt_tokens)s, %(completion_tokens)s,
        %(gen_ms)s, %(prompt_sha256)s, %(batch_width)s)
ON CONFLICT (experiment_id, subject_id) DO NOTHING

-- name: experiment_finish
UPDATE interp.experiments
   SET status = %(status)s, error = %(error)s, finished_at = now()
 WHERE experiment_id = %(experiment_id)s

-- name: experiment_header
SELECT e.*, (SELECT count(*) FROM interp.experiment_results r
              WHERE r.experiment_id = e.experiment_id) AS subjects
  FROM interp.experiments e
 WHERE e.experiment_id = %(experiment_id)s

-- name: experiment_pairs
-- Each subject the experiment ran, beside what production recorded for it at
-- the same step and visit (the checkpoint its inputs came from).
SELECT r.subject_id, r.visit,
       r.ok AS exp_ok, r.outcome AS exp_outcome, r.output AS exp_output, r.error AS exp_error,
       r.tries AS exp_tries, r.prompt_tokens AS exp_prompt_tokens,
       r.completion_tokens AS exp_completion_tokens, r.gen_ms AS exp_gen_ms,
       extract(epoch FROM r.finished_at - r.started_at) * 1000 AS exp_ms,
       r.model AS exp_model,
       c.checkpoint_id IS NOT NULL AS prod_found,
       c.ok AS prod_ok, c.outcome AS prod_outcome, c.output AS prod_output,
       c.prompt_tokens AS prod_prompt_tokens, c.completion_tokens AS prod_completion_tokens,
       c.gen_ms AS prod_gen_ms,
       extract(epoch FROM c.finished_at - c.started_at) * 1000 AS prod_ms,
       c.model AS prod_model,
       -- unknown (no output, no prompt hash on either side) is not the same
       coalesce(r.output = c.output, false) AS identical,
       coalesce(r.prompt_sha256 = c.prompt_sha256, false) AS same_prompt
  FROM interp.experiment_results r
  LEFT JOIN interp.checkpoints c ON c.checkpoint_id = r.checkpoint_id
 WHERE r.experiment_id = %(experiment_id)s
 ORDER BY r.subject_id

-- name: experiment_list
SELECT e.experiment_id, e.workflow_id, e.step, e.changes, e.status, e.db_role, e.os_user,
       e.started_at, e.finished_at,
       (SELECT count(*) FROM interp.experiment_results r
         WHERE r.experiment_id = e.experiment_id) AS subjects
  FROM interp.experiments e
 WHERE %(workflow_id)s::integer IS NULL OR e.workflow_id = %(workflow_id)s::integer
 ORDER BY e.experiment_id DESC
 LIMIT %(limit)s

-- name: experiment_production_generating
-- Whether a running production run generated with a model of this source (a
-- role of the same file) within the last %(within_s)s seconds: its lane
-- intervals are written every few seconds, the one running included.
SELECT EXISTS (
    SELECT 1 FROM interp.lane_intervals i
      JOIN interp.runs r ON r.run_id = i.run_id AND r.status = 'running'
      JOIN interp.models m ON m.name = i.model
     WHERE i.lane = 'model' AND i.cause = 'generating' AND m.source = %(source)s
       AND i.ended_at > now() - make_interval(secs => %(within_s)s)) AS busy
