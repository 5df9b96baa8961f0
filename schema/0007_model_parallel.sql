-- How many sequences a model serves at once: a local GGUF decodes up to this many
-- in one llama.cpp context (continuous batching); a server receives up to this
-- many requests at once. NULL: the backend's default (1 for a local model on the
-- CPU, where batching gains little; see docs/actors.md).
ALTER TABLE interp.models
    ADD COLUMN IF NOT EXISTS parallel integer CHECK (parallel IS NULL OR parallel BETWEEN 1 AND 256);
