-- Operator verbs: `interp retry`, `interp rewind`, `interp cancel` (docs/ops.md,
-- "Retry, rewind and cancel").
--
-- A new subject status, 'cancelled': the subject stopped where it was (its step
-- is kept), by an operator's hand. It is neither done nor dead; no worker
-- claims it, and `interp retry` or `interp rewind` can bring it back.
ALTER TABLE interp.subject_state DROP CONSTRAINT subject_state_status_check;
ALTER TABLE interp.subject_state ADD CONSTRAINT subject_state_status_check
    CHECK (status IN ('ready', 'leased', 'done', 'dead', 'cancelled'));

-- Every action an operator took, written in the transaction that made the
-- change (a --dry-run changes nothing and is not recorded). selection is what
-- the operator asked for, as given; the counts are what it found:
--   selected  subjects the selection picked, whatever their status
--   matched   those in a status the verb applies to
--   skipped   matched, but held by a running wave (a live lease, or locked by a
--             wave's transaction): never moved under a worker
--   changed   moved (matched - skipped)
CREATE TABLE interp.operator_actions (
    action_id   bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    verb        text NOT NULL CHECK (verb IN ('retry', 'rewind', 'cancel')),
    workflow_id integer NOT NULL REFERENCES interp.workflows ON DELETE CASCADE,
    to_step     integer,                    -- rewind's target step
    selection   jsonb NOT NULL CHECK (jsonb_typeof(selection) = 'object'),
    reason      text NOT NULL CHECK (reason <> ''),
    db_role     text NOT NULL DEFAULT current_user,   -- the role the change ran as
    db_user     text NOT NULL DEFAULT session_user,   -- the login it came through
    os_user     text,                       -- the operating-system user of the client
    client_host text,
    selected    integer NOT NULL CHECK (selected >= 0),
    matched     integer NOT NULL CHECK (matched >= 0),
    skipped     integer NOT NULL CHECK (skipped >= 0),
    changed     integer NOT NULL CHECK (changed >= 0),
    CHECK (matched = skipped + changed)
);
CREATE INDEX operator_actions_workflow ON interp.operator_actions (workflow_id, at);

-- The subjects each action moved, and from where: `interp trace` shows a
-- subject's actions from here.
CREATE TABLE interp.operator_action_subjects (
    action_id   bigint NOT NULL REFERENCES interp.operator_actions ON DELETE CASCADE,
    workflow_id integer NOT NULL,
    subject_id  text NOT NULL,
    from_status text NOT NULL,
    from_step   integer,
    from_visits integer NOT NULL,
    to_status   text NOT NULL,
    to_step     integer,
    PRIMARY KEY (action_id, subject_id)
);
CREATE INDEX operator_action_subjects_subject
    ON interp.operator_action_subjects (workflow_id, subject_id);

-- Both least-privilege roles read the record (when `interp db roles` has made
-- them; running it again after a migration grants the same). Neither may write
-- it, so neither can run the verbs: they are for the schema's owner.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'interp_ops') THEN
        GRANT SELECT ON interp.operator_actions, interp.operator_action_subjects TO interp_ops;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'interp_worker') THEN
        GRANT SELECT ON interp.operator_actions, interp.operator_action_subjects TO interp_worker;
    END IF;
END $do$;
