-- Workflow 1001 "Posting word counts": the worked example of docs/writing-workflows.md.
-- A gate, a script actor and a SQL actor, with no model, over public.postings.
-- Idempotent: every statement is an upsert.

CREATE TABLE IF NOT EXISTS public.posting_stats (
    posting_id bigint PRIMARY KEY REFERENCES public.postings ON DELETE CASCADE,
    words      integer NOT NULL,
    is_long    boolean NOT NULL,
    counted_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO interp.workflows (workflow_id, name, description, subject_table, subject_key)
VALUES (1001, 'Posting word counts', 'Count the words of each enabled posting, once.',
        'public.postings', 'posting_id')
ON CONFLICT (workflow_id) DO UPDATE SET name = EXCLUDED.name,
    description = EXCLUDED.description, subject_table = EXCLUDED.subject_table,
    subject_key = EXCLUDED.subject_key;

INSERT INTO interp.actors (name, kind, target, params) VALUES
  ('count_words', 'script', 'actors.examples:count_words', '{"long_at": 120}'),
  ('save_word_count', 'sql', $sql$
INSERT INTO public.posting_stats (posting_id, words, is_long)
SELECT (b->>'subject_id')::bigint, (b->'outputs'->'2'->>'words')::int,
       (b->'outputs'->'2'->>'words')::int >= 120
  FROM jsonb_array_elements(%(batch)s) AS b
ON CONFLICT (posting_id) DO UPDATE SET words = EXCLUDED.words, is_long = EXCLUDED.is_long,
    counted_at = now()
$sql$, '{}')
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target,
    params = EXCLUDED.params;

INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor, gate_sql) VALUES
  (1001, 1, 'Check if counted', 'gate', NULL, $sql$
SELECT p.posting_id::text AS subject_id,
       CASE WHEN s.posting_id IS NULL THEN 'RUN' ELSE 'SKIP' END AS outcome
  FROM public.postings p LEFT JOIN public.posting_stats s USING (posting_id)
 WHERE p.posting_id = ANY(%(ids)s::bigint[])
$sql$),
  (1001, 2, 'Count words', 'actor', 'count_words', NULL),
  (1001, 3, 'Save count', 'actor', 'save_word_count', NULL)
ON CONFLICT (workflow_id, execution_order) DO UPDATE SET name = EXCLUDED.name,
    kind = EXCLUDED.kind, actor = EXCLUDED.actor, gate_sql = EXCLUDED.gate_sql;

INSERT INTO interp.step_transitions (workflow_id, from_step, outcome, to_step) VALUES
  (1001, 1, 'RUN', 2), (1001, 1, 'SKIP', NULL),
  (1001, 2, 'LONG', 3), (1001, 2, 'SHORT', 3),
  (1001, 3, 'DONE', NULL)
ON CONFLICT (workflow_id, from_step, outcome) DO UPDATE SET to_step = EXCLUDED.to_step;

INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) VALUES
  (1001, 'enabled postings',
   'SELECT posting_id AS subject_id FROM public.postings WHERE enabled', 1)
ON CONFLICT (workflow_id, name) DO UPDATE SET admit_sql = EXCLUDED.admit_sql,
    first_step = EXCLUDED.first_step;
