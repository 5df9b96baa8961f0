-- Remote model servers that want a bearer key, and TLS with a private CA.
--
-- api_key_env names an ENVIRONMENT VARIABLE of the worker that holds the key;
-- the key itself is never stored here (nor anywhere else interp writes). The
-- worker reads the variable when it opens the model and sends
-- `Authorization: Bearer <key>`. Columns, not keys in `sampling` (which reaches
-- the server as request fields) or a params jsonb: typed, checked here, and
-- shown by `interp models list` and exports as what they are.
--
-- ca_bundle is a PEM file of CA certificates, on the worker's machine, that
-- https:// servers are verified against instead of the system's; certificates
-- are always verified.
ALTER TABLE interp.models
    ADD COLUMN IF NOT EXISTS api_key_env text
        CHECK (api_key_env IS NULL OR api_key_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    ADD COLUMN IF NOT EXISTS ca_bundle text
        CHECK (ca_bundle IS NULL OR ca_bundle <> '');

COMMENT ON COLUMN interp.models.api_key_env IS
    'the name of an environment variable of the worker that holds the server''s bearer key (never the key)';
COMMENT ON COLUMN interp.models.ca_bundle IS
    'a PEM file of CA certificates that https:// servers are verified against (default: the system''s)';
