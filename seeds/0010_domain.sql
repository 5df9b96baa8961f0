-- Domain tables for the job-posting workflows. They live in the public schema,
-- where the user keeps their data; the engine's own tables are in `interp`.
-- Idempotent: loading this file twice changes nothing.

CREATE TABLE IF NOT EXISTS public.postings (
    posting_id        bigint PRIMARY KEY,
    title             text NOT NULL,
    company           text NOT NULL DEFAULT '',
    location          text NOT NULL DEFAULT '',
    remote_policy     text NOT NULL DEFAULT 'onsite'
                      CHECK (remote_policy IN ('onsite', 'hybrid', 'remote')),
    seniority         text NOT NULL DEFAULT '',
    description       text NOT NULL DEFAULT '',
    salary_min        integer,
    salary_max        integer,
    currency          text,
    source            text NOT NULL DEFAULT 'sample',
    posted_at         timestamptz NOT NULL DEFAULT now(),
    times_reposted    integer NOT NULL DEFAULT 0,   -- history, an IHL signal
    enabled           boolean NOT NULL DEFAULT true,
    extracted_summary text,
    summary_saved_at  timestamptz,
    skills            jsonb,
    skills_saved_at   timestamptz,
    ihl_score         integer CHECK (ihl_score BETWEEN 1 AND 10),
    ihl_verdict       text,
    ihl_saved_at      timestamptz
);
CREATE INDEX IF NOT EXISTS postings_enabled ON public.postings (posting_id) WHERE enabled;

-- Summaries that failed grading wait here for a person.
CREATE TABLE IF NOT EXISTS public.review_queue (
    posting_id  bigint NOT NULL REFERENCES public.postings ON DELETE CASCADE,
    workflow_id integer NOT NULL,
    reason      text NOT NULL,
    summary     jsonb,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    PRIMARY KEY (posting_id, workflow_id)
);
