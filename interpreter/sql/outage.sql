-- A commit whose reply was lost (docs/reliability.md, "In-doubt commits"): the
-- connection broke during COMMIT, so the worker asks the database whether its
-- commit happened before it redoes the wave. Each wave's commit writes a token
-- of its own on its wave row (interp.waves.commit_token), in the same
-- transaction as its checkpoints.

-- name: leased_wave_in_doubt
-- A leased wave: its row exists since its claim. FOR UPDATE waits for the lost
-- commit's transaction if the server is still running it, and then reads the
-- row as that transaction left it. ours: the commit happened; committed: what
-- it wrote.
SELECT committed, commit_token IS NOT DISTINCT FROM %(token)s::uuid AS ours
  FROM interp.waves
 WHERE wave_id = %(wave_id)s
   FOR UPDATE

-- name: inline_wave_wait
-- An inline wave: its row is written by its commit. First wait for the lost
-- commit's transaction, if the server is still running it, by locking the
-- subjects it had locked (inline_wave_in_doubt, the next statement, then sees
-- what it committed).
SELECT count(*) AS n
  FROM (SELECT 1 FROM interp.subject_state
         WHERE workflow_id = %(workflow_id)s AND subject_id = ANY(%(ids)s::text[])
           FOR SHARE) locked

-- name: inline_wave_in_doubt
-- The inline wave's row, if its commit happened: a wave id taken in a
-- transaction that did not commit can be handed out again after a crash, so
-- the token, not the id, says whose commit it was.
SELECT committed FROM interp.waves
 WHERE wave_id = %(wave_id)s AND commit_token = %(token)s::uuid
