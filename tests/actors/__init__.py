"""Script actors for tests only: fault injectors and chaos helpers.

They are reachable as script targets only where the tests allow them
(INTERP_SCRIPT_PREFIXES in tests/conftest.py); the shipped default allowlist
names the `actors` package alone.
"""
