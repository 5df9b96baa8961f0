-- A wave's commit writes a token of its own (a random uuid) on its wave row, in
-- the same transaction as its checkpoints. When the connection breaks during
-- COMMIT, the worker cannot tell from the error whether the commit reached the
-- database; before redoing it, it looks for its token: found, the commit
-- happened and the wave row says what it wrote; absent, it did not, and the
-- wave is redone (docs/reliability.md, "In-doubt commits"). NULL for waves
-- recorded before this column, and for waves not committed (yet).
ALTER TABLE interp.waves ADD COLUMN IF NOT EXISTS commit_token uuid;
