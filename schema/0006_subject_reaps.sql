-- How many times a subject's lease expired at its current step, its worker
-- having died or hung on it (a segfault in a native library, an OOM kill).
-- The reaper charges a failed attempt at the second expiry, and a subject
-- with an expiry runs in a wave of its own, so one that kills every worker
-- that runs it ends dead-lettered instead of looping, and alone. Every commit
-- of the subject resets it.
ALTER TABLE interp.subject_state ADD COLUMN reaps integer NOT NULL DEFAULT 0 CHECK (reaps >= 0);
