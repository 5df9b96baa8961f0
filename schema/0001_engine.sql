-- The engine's tables (DESIGN.md "Tables"). Definitions are written by
-- workflow authors; runtime tables are written by the engine and read by ops.
--
-- References from steps to actors, templates and models, and from transitions
-- to their target step, are by name and late-bound on purpose (ADR 0001):
-- authors load definitions in any order and swap a model or a prompt by
-- name; `interp workflow validate` (run before every `interp run`) reports a
-- dangling name instead of a foreign key refusing a half-loaded seed.

CREATE SCHEMA IF NOT EXISTS interp;

-- ---------------------------------------------------------------- definitions

CREATE TABLE interp.workflows (
    workflow_id   integer PRIMARY KEY,
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    subject_table text NOT NULL,            -- e.g. 'public.postings'
    subject_key   text NOT NULL,            -- e.g. 'posting_id'
    paused        boolean NOT NULL DEFAULT false,
    version       integer NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE interp.models (
    name          text PRIMARY KEY,         -- a role name ("gemma3") or a model name
    source        text NOT NULL,            -- file path | pkg:<module>/<file> | gemma3-270m | http(s)://server
    n_gpu_layers  integer NOT NULL DEFAULT 0 CHECK (n_gpu_layers >= -1),
    n_ctx         integer NOT NULL DEFAULT 2048 CHECK (n_ctx >= 64),
    n_threads     integer CHECK (n_threads IS NULL OR n_threads > 0),
    chat_format   text,                     -- NULL: the template inside the GGUF
    sampling      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(sampling) = 'object'),
    sha256        text CHECK (sha256 IS NULL OR sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes    bigint,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE interp.actors (
    name    text PRIMARY KEY,
    kind    text NOT NULL CHECK (kind IN ('sql', 'script', 'model')),
    target  text NOT NULL,                  -- SQL text | module:function | model name
    params  jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
    CHECK (kind <> 'script' OR target ~ '^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$')
);

CREATE TABLE interp.prompt_templates (
    name       text NOT NULL,
    version    integer NOT NULL DEFAULT 1 CHECK (version > 0),
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE interp.steps (
    workflow_id     integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    execution_order integer NOT NULL CHECK (execution_order > 0),
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('gate', 'actor')),
    actor           text,                   -- interp.actors.name, for kind 'actor'
    template        text,                   -- interp.prompt_templates.name, for model actors
    gate_sql        text,                   -- for kind 'gate'
    output_schema   jsonb,                  -- JSON Schema the output must satisfy
    outcome_field   text,                   -- output field that names the outcome
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_s       double precision NOT NULL DEFAULT 300 CHECK (timeout_s > 0),
    params          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
    PRIMARY KEY (workflow_id, execution_order),
    UNIQUE (workflow_id, name),
    CHECK (kind <> 'actor' OR actor IS NOT NULL)
);

CREATE TABLE interp.step_transitions (
    workflow_id integer NOT NULL,
    from_step   integer NOT NULL,
    outcome     text NOT NULL CHECK (outcome ~ '^([A-Z][A-Z0-9_]*|\*)$'),  -- '*' = any other
    to_step     integer,                    -- NULL = the end
    PRIMARY KEY (workflow_id, from_step, outcome),
    FOREIGN KEY (workflow_id, from_step)
        REFERENCES interp.steps (workflow_id, execution_order) ON DELETE CASCADE
);

CREATE TABLE interp.entry_points (
    workflow_id integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    name        text NOT NULL,
    admit_sql   text NOT NULL,              -- returns a column subject_id
    first_step  integer NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    PRIMARY KEY (workflow_id, name),
    FOREIGN KEY (workflow_id, first_step)
        REFERENCES interp.steps (workflow_id, execution_order) ON DELETE CASCADE
);

-- Any change to a workflow's definition bumps its version, so a run records
-- exactly what it ran and notices an edit made while it runs.
CREATE FUNCTION interp.bump_workflow_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE wf integer;
BEGIN
    IF TG_OP = 'DELETE' THEN wf := OLD.workflow_id; ELSE wf := NEW.workflow_id; END IF;
    UPDATE interp.workflows SET version = version + 1, updated_at = now()
     WHERE workflow_id = wf;
    RETURN NULL;
END $$;

-- An UPDATE that changes nothing (a seed loaded again) is no edit.
CREATE TRIGGER steps_version AFTER INSERT OR DELETE ON interp.steps
    FOR EACH ROW EXECUTE FUNCTION interp.bump_workflow_version();
CREATE TRIGGER steps_version_update AFTER UPDATE ON interp.steps
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION interp.bump_workflow_version();
CREATE TRIGGER transitions_version AFTER INSERT OR DELETE ON interp.step_transitions
    FOR EACH ROW EXECUTE FUNCTION interp.bump_workflow_version();
CREATE TRIGGER transitions_version_update AFTER UPDATE ON interp.step_transitions
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION interp.bump_workflow_version();
CREATE TRIGGER entry_points_version AFTER INSERT OR DELETE ON interp.entry_points
    FOR EACH ROW EXECUTE FUNCTION interp.bump_workflow_version();
CREATE TRIGGER entry_points_version_update AFTER UPDATE ON interp.entry_points
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION interp.bump_workflow_version();

-- ---------------------------------------------------------------- runtime

CREATE TABLE interp.runs (
    run_id             bigserial PRIMARY KEY,
    workflow_id        integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    worker_id          text NOT NULL,
    host               text NOT NULL,
    pid                integer NOT NULL,
    definition_version integer NOT NULL,
    args               jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    status             text NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'finished', 'stopped', 'failed')),
    error              text
);

CREATE TABLE interp.waves (
    wave_id      bigserial PRIMARY KEY,
    workflow_id  integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    step         integer NOT NULL,
    run_id       bigint REFERENCES interp.runs ON DELETE SET NULL,
    size         integer NOT NULL,
    model        text,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    committed    integer,                   -- subjects whose result was committed (fenced)
    busy_ms      double precision           -- actor time inside the wave
);
CREATE INDEX waves_workflow_time ON interp.waves (workflow_id, claimed_at);

CREATE TABLE interp.subject_state (
    workflow_id     integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    subject_id      text NOT NULL,
    entry_point     text,
    step            integer,                -- current step; NULL once ended
    status          text NOT NULL DEFAULT 'ready'
                    CHECK (status IN ('ready', 'leased', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,  -- failed attempts at the current step
    visits          integer NOT NULL DEFAULT 0,  -- transitions taken so far (cycle guard)
    outputs         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- latest output per step number
    last_outcome    text,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_expires   timestamptz,
    wave_id         bigint,                 -- the wave holding the lease (fencing token)
    admitted_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, subject_id),
    CHECK ((status = 'leased') = (lease_owner IS NOT NULL)),
    CHECK (status IN ('done', 'dead') OR step IS NOT NULL)
);
-- The claim query: ready subjects of one step, oldest first.
CREATE INDEX subject_state_ready ON interp.subject_state (workflow_id, step, next_attempt_at)
    WHERE status = 'ready';
-- The reaper and the claim of expired leases.
CREATE INDEX subject_state_leased ON interp.subject_state (workflow_id, lease_expires)
    WHERE status = 'leased';
CREATE INDEX subject_state_dead ON interp.subject_state (workflow_id) WHERE status = 'dead';

CREATE TABLE interp.checkpoints (
    checkpoint_id     bigserial PRIMARY KEY,
    workflow_id       integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    subject_id        text NOT NULL,
    step              integer NOT NULL,
    visit             integer NOT NULL,     -- which visit of the subject to this step
    attempt           integer NOT NULL CHECK (attempt >= 1),
    ok                boolean NOT NULL,     -- the step succeeded (any outcome) vs an error
    outcome           text NOT NULL CHECK (outcome ~ '^[A-Z][A-Z0-9_]*$'),
    output            jsonb,
    error             text,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    wave_id           bigint,
    run_id            bigint,
    worker_id         text,
    -- model audit
    model             text,
    model_sha256      text,
    seed              bigint,
    sampling          jsonb,
    prompt_tokens     integer,
    completion_tokens integer,
    gen_ms            double precision,
    UNIQUE (workflow_id, subject_id, step, visit, attempt)
);
-- A step never gets two successful checkpoints for one subject (per visit):
-- a late write from a zombie conflicts here instead of duplicating (DBOS's ledger).
CREATE UNIQUE INDEX checkpoints_one_success
    ON interp.checkpoints (workflow_id, subject_id, step, visit) WHERE ok;
-- trace, and "did this posting pass step N"
CREATE INDEX checkpoints_subject ON interp.checkpoints (workflow_id, subject_id, step);
-- progress, velocity and stall detection per step over time
CREATE INDEX checkpoints_step_time ON interp.checkpoints (workflow_id, step, finished_at);

CREATE TABLE interp.actor_health (
    actor                text PRIMARY KEY,
    state                text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    opened_at            timestamptz,
    probe_owner          text,
    last_error           text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Model loads and switches, for "where did the GPU sit idle".
CREATE TABLE interp.model_events (
    event_id    bigserial PRIMARY KEY,
    run_id      bigint REFERENCES interp.runs ON DELETE SET NULL,
    worker_id   text,
    event       text NOT NULL CHECK (event IN ('load', 'switch', 'evict', 'load_failed')),
    model       text NOT NULL,
    from_model  text,
    duration_ms double precision,
    detail      text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_events_at ON interp.model_events (at);
