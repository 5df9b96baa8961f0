-- Which run admitted a subject: the run whose admission pass inserted its
-- interp.subject_state row (NULL for subjects admitted before this column, or
-- outside a run: a library call, a test). Admission runs on its own schedule in
-- every polling worker, one worker at a time per workflow (an advisory lock),
-- so this says which worker took the row in and, with admitted_at, when.
ALTER TABLE interp.subject_state
    ADD COLUMN IF NOT EXISTS admitted_by_run bigint REFERENCES interp.runs ON DELETE SET NULL;
