-- How many subjects of its wave a model ran at once when it made a checkpoint:
-- the backend's slots (a local model's `parallel`, a server row's requests in
-- flight), or the wave's size if smaller; 1 when they ran one after another.
-- NULL for checkpoints that are not a model's (and for those written before
-- this column). Recorded because batching changes a greedy output now and then
-- (docs/actors.md): the audit says which outputs came from a batch.
ALTER TABLE interp.checkpoints
    ADD COLUMN IF NOT EXISTS batch_width integer CHECK (batch_width IS NULL OR batch_width >= 1);
