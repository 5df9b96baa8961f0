from interpreter.queries import parse_registry, registry


def test_registry_parses_named_blocks():
    text = "-- name: a\nSELECT 1;\n\n-- name: b\nSELECT 2\n"
    assert parse_registry(text) == {"a": "SELECT 1;", "b": "SELECT 2"}


def test_registry_file_loads():
    assert isinstance(registry(), dict)
