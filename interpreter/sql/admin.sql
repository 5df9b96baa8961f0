-- Administration: migrations, least-privilege roles, and the small reads and
-- writes behind `interp db info`, `interp pause` and `interp models`.
-- Code asks for them with Q["name"]. Placeholders are psycopg's %(name)s or %s;
-- {braces} are filled with psycopg.sql composition (identifiers and literals
-- quoted by psycopg, never formatted by hand).

-- name: admin_server_info
SELECT version() AS version, current_database() AS database, current_user AS user

-- name: admin_set_workflow_paused
UPDATE interp.workflows SET paused = %(paused)s WHERE workflow_id = %(workflow_id)s

-- name: admin_models
SELECT * FROM interp.models ORDER BY name

-- name: admin_models_named
SELECT * FROM interp.models WHERE name = ANY(%(names)s) ORDER BY name

-- name: migration_table
SELECT to_regclass('interp.schema_migrations') AS t

-- name: migrations_applied
SELECT version, name, checksum, applied_at FROM interp.schema_migrations

-- name: migration_bookkeeping
CREATE SCHEMA IF NOT EXISTS interp;
CREATE TABLE IF NOT EXISTS interp.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migration_lock
SELECT pg_advisory_lock(%(key)s)

-- name: migration_unlock
SELECT pg_advisory_unlock(%(key)s)

-- name: migration_record
INSERT INTO interp.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: role_schema_tables
SELECT c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')

-- name: role_create
DO $do$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
    CREATE ROLE {role} {login};
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $do$

-- name: role_grant_interp_usage
GRANT USAGE ON SCHEMA interp TO {worker}, {ops}

-- name: role_grant_interp_select
GRANT SELECT ON ALL TABLES IN SCHEMA interp TO {worker}, {ops}

-- name: role_default_interp_select
ALTER DEFAULT PRIVILEGES IN SCHEMA interp GRANT SELECT ON TABLES TO {worker}, {ops}

-- name: role_revoke_ops_writes
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA interp FROM {ops}

-- name: role_revoke_interp_create
REVOKE CREATE ON SCHEMA interp FROM {worker}, {ops}

-- name: role_revoke_definition_writes
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {tables} FROM {worker}

-- name: role_grant_runtime_writes
GRANT INSERT, UPDATE ON {tables} TO {worker}

-- name: role_grant_model_file_columns
GRANT UPDATE ({columns}) ON interp.models TO {worker}

-- name: role_grant_interp_sequences
GRANT USAGE ON ALL SEQUENCES IN SCHEMA interp TO {worker}

-- name: role_grant_schema_usage
GRANT USAGE ON SCHEMA {schema} TO {worker}

-- name: role_grant_schema_tables
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {worker}

-- name: role_grant_schema_sequences
GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {worker}

-- name: role_grant_domain_tables
GRANT SELECT, INSERT, UPDATE ON {tables} TO {worker}

-- name: role_login_inherit
ALTER ROLE {user} LOGIN INHERIT

-- name: role_password
ALTER ROLE {user} PASSWORD {password}

-- name: role_grant_membership
GRANT {group} TO {user}
