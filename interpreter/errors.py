"""Errors that the CLI turns into one clear line and an exit code."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


class InterpError(Exception):
    """A user-facing error: bad input, bad definition, unreachable database."""

    exit_code = 1


class DatabaseUnreachable(InterpError):
    exit_code = 2


class DefinitionError(InterpError):
    exit_code = 1


class NotFound(InterpError):
    exit_code = 1
