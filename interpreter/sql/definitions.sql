-- Loading and validating workflow definitions, by name. Code asks for them
-- with Q["name"]. Placeholders are psycopg's %(name)s; {braces} are filled
-- with psycopg.sql composition (author-written SQL only, never subject data).

-- name: definition_workflows
SELECT w.workflow_id, w.name, w.subject_table, w.subject_key, w.paused, w.version,
       (SELECT count(*) FROM interp.steps s WHERE s.workflow_id = w.workflow_id) AS steps
  FROM interp.workflows w ORDER BY w.workflow_id

-- name: definition_workflow
SELECT * FROM interp.workflows WHERE workflow_id = %(workflow_id)s

-- name: definition_steps
SELECT * FROM interp.steps WHERE workflow_id = %(workflow_id)s ORDER BY execution_order

-- name: definition_transitions
SELECT * FROM interp.step_transitions WHERE workflow_id = %(workflow_id)s

-- name: definition_entry_points
SELECT * FROM interp.entry_points WHERE workflow_id = %(workflow_id)s ORDER BY name

-- name: definition_actors
SELECT * FROM interp.actors WHERE name = ANY(%(names)s)

-- name: definition_models
SELECT * FROM interp.models WHERE name = ANY(%(names)s)

-- name: definition_templates
-- The newest version of each named template.
SELECT DISTINCT ON (name) name, version, body FROM interp.prompt_templates
 WHERE name = ANY(%(names)s) ORDER BY name, version DESC

-- name: validate_subject_columns
-- The columns of the subject table (none when it does not exist).
SELECT attname FROM pg_attribute
 WHERE attrelid = to_regclass(%(table)s) AND attnum > 0 AND NOT attisdropped
