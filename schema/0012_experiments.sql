-- Experiments (issue 21; docs/changing-a-pipeline.md, ADR 0006): try a prompt
-- template, a model or sampling settings on subjects that already passed a
-- step, from the inputs that step saw, without touching production.
--
-- A step may pin a template version: NULL runs the newest version (as before),
-- a number runs that version. Publishing a tried version is moving the pin
-- (an UPDATE of the step, which bumps the workflow's version as any step edit).
ALTER TABLE interp.steps
    ADD COLUMN IF NOT EXISTS template_version integer
        CHECK (template_version IS NULL OR template_version > 0);

-- One row per experiment: what was changed, on which step, by whom, and how it ended.
CREATE TABLE interp.experiments (
    experiment_id bigserial PRIMARY KEY,
    workflow_id   integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    step          integer NOT NULL,
    changes       jsonb NOT NULL DEFAULT '{}'::jsonb,   -- template, model, sampling tried
    template_body text,                                 -- the prompt template it ran
    seed          bigint,                               -- picks the sample
    requested     integer NOT NULL DEFAULT 0,           -- subjects chosen
    db_role       text NOT NULL DEFAULT current_user,
    os_user       text,
    host          text,
    pid           integer,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'finished', 'failed', 'stopped')),
    error         text
);
CREATE INDEX experiments_workflow ON interp.experiments (workflow_id, experiment_id);

-- One row per subject tried: the result, as a checkpoint would hold it, and the
-- production checkpoint it is compared with (no foreign key: pruning production's
-- checkpoints must stay free of the experiments' rows).
CREATE TABLE interp.experiment_results (
    experiment_id     bigint NOT NULL REFERENCES interp.experiments ON DELETE CASCADE,
    subject_id        text NOT NULL,
    checkpoint_id     bigint NOT NULL,      -- production's successful checkpoint at the step
    visit             integer NOT NULL,
    ok                boolean NOT NULL,
    outcome           text NOT NULL,
    output            jsonb,
    error             text,
    tries             integer,              -- 1 + re-asks
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    model             text,
    model_sha256      text,
    seed              bigint,
    sampling          jsonb,
    prompt_tokens     integer,
    completion_tokens integer,
    gen_ms            double precision,
    prompt_sha256     text,
    batch_width       integer,
    PRIMARY KEY (experiment_id, subject_id)
);
