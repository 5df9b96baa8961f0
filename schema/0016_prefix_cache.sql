-- The prefix cache of a local model (docs/actors.md, "Prefix cache"): the KV
-- state of recent prompts, kept per loaded model so that a prompt starting like
-- an earlier one decodes only what differs. prefix_cache_mb is its budget in
-- MiB; NULL: the default (256 MiB); 0 turns it off. A server row ignores it.
ALTER TABLE interp.models
    ADD COLUMN IF NOT EXISTS prefix_cache_mb integer
        CHECK (prefix_cache_mb IS NULL OR prefix_cache_mb >= 0);

-- What a model checkpoint's prompt did not have to decode, and what its answer
-- did not have to sample, summed over the tries of the attempt:
-- prompt_tokens_reused: prompt tokens whose KV cells were reused (the previous
-- call's, or a prefix-cache entry's; a server's own cached tokens when it
-- reports them), so prompt_tokens - prompt_tokens_reused were decoded;
-- forced_tokens: answer tokens the output schema's grammar forced, added
-- without sampling (jump-forward decoding). NULL where the backend cannot tell,
-- for checkpoints that are not a model's, and for those written before this
-- migration.
ALTER TABLE interp.checkpoints
    ADD COLUMN IF NOT EXISTS prompt_tokens_reused integer
        CHECK (prompt_tokens_reused IS NULL OR prompt_tokens_reused >= 0),
    ADD COLUMN IF NOT EXISTS forced_tokens integer
        CHECK (forced_tokens IS NULL OR forced_tokens >= 0);
