import psycopg

from interpreter.migrations import known_migrations, migrate, migration_status


def test_migrate_twice_is_a_noop(dsn):
    assert migrate(dsn) == []  # the template already migrated it
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        states = {r["state"] for r in migration_status(conn)}
    assert states == {"applied"}


def test_unknown_migration_is_refused(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO interp.schema_migrations (version, name, checksum) "
                     "VALUES (9999, 'future', 'x')")
    try:
        migrate(dsn)
    except Exception as exc:
        assert "9999" in str(exc)
    else:
        raise AssertionError("an unknown migration must be refused")


def test_every_design_table_exists(conn):
    names = {r["table_name"] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'interp'")}
    for t in ["workflows", "steps", "step_transitions", "entry_points", "actors", "models",
              "prompt_templates", "runs", "subject_state", "checkpoints", "waves",
              "actor_health", "schema_migrations"]:
        assert t in names, t
    assert len(known_migrations()) >= 1
