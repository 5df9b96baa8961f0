"""Script actors used by the seeded workflows (user-space code, loaded by dotted path)."""
