"""Errors that the CLI turns into one clear line and an exit code."""


class InterpError(Exception):
    """A user-facing error: bad input, bad definition, unreachable database."""

    exit_code = 1


class DatabaseUnreachable(InterpError):
    exit_code = 2


class DefinitionError(InterpError):
    exit_code = 1


class NotFound(InterpError):
    exit_code = 1
