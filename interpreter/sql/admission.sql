-- Admission's own queries (the admitting statement itself is `admit` in
-- queries.sql). Admission runs on its own schedule in every worker
-- (interpreter/admission.py); an advisory lock per workflow, held for the
-- admission's transaction, lets one worker admit at a time.
--
-- The lock's key is two integers: a constant that names admission (the class)
-- and the workflow id. The two-integer key space does not overlap the
-- one-bigint space that the migration lock uses.

-- name: admission_try_lock
-- A periodic admission: takes the workflow's admission lock if it is free and
-- the workflow is not paused. No row (paused) or locked = false (another
-- worker is admitting now): this worker skips this tick, it does not wait.
SELECT pg_try_advisory_xact_lock(%(lock_class)s, %(workflow_id)s) AS locked
  FROM interp.workflows
 WHERE workflow_id = %(workflow_id)s AND NOT paused

-- name: admission_lock
-- The admission at a run's start and the last look of an --until-idle run:
-- waits for another worker's admission to commit, so that what it admitted is
-- seen before the run decides there is nothing left.
SELECT pg_advisory_xact_lock(%(lock_class)s, %(workflow_id)s)
