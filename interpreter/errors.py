"""The package's one error tree.

Every exception interp raises derives from :class:`InterpException`:

- :class:`InterpError` and its subclasses are user-facing: bad input, a bad
  definition, an unreachable database. They carry an ``exit_code``; the CLI
  (``interpreter.cli.main``, the one place that maps errors to exit codes)
  prints their message as one line and exits with it.
- :class:`InternalError` and its subclasses are signals inside the engine (a
  wave to redo, a statement that timed out): a lane catches them and turns them
  into checkpoints or a retry; they are not meant to reach a user. Where a
  builtin error is expected of a function (a caller's bad value, json's
  TypeError), it raises a tree class that also derives from that builtin
  (:class:`InvalidValue`, :class:`NotJsonValue`), never the bare builtin.
"""

from __future__ import annotations

import errno


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


class InterpException(Exception):
    """The base of every exception the package raises."""


class InterpError(InterpException):
    """A user-facing error: bad input, bad definition, unreachable database."""

    exit_code = 1


class DatabaseUnreachable(InterpError):
    exit_code = 2


class DefinitionError(InterpError):
    exit_code = 1


class NotFound(InterpError):
    exit_code = 1


class PortInUse(InterpError):
    """A server (the dashboard, the metrics endpoint) found its port taken."""

    exit_code = 1


def listen_error(exc: OSError, host: str, port: int, *, flag: str, doing: str) -> InterpError:
    """The one-line error for a server that cannot bind `host:port` (`doing`: what it
    was about to do, "listen" or "serve metrics"); `flag` picks another port."""
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(f"port {port} on {host} is already in use; pick another with {flag}")
    return InterpError(f"cannot {doing} on {host}:{port}: {exc.strerror or exc}")


class InternalError(InterpException):
    """A signal inside the engine, caught by the lane that runs the wave."""


class InvalidValue(InternalError, ValueError):
    """A function was given a value it does not take: a caller's mistake (a bad
    registration, a malformed registry file, an API request without its
    parameter). Also a ValueError, for callers that catch one."""


class NotJsonValue(InternalError, TypeError):
    """A value JSON cannot hold (json.dumps's `default` raises it). Also a
    TypeError, as json's protocol expects."""


class TransientWaveError(InternalError):
    """An author's statement hit a transient database error: the wave's transaction
    is rolled back and the wave redone, no attempt counted."""


class StatementTimedOut(InternalError):
    """An author's statement ran past its step's timeout_s: the wave's subjects get
    a TIMEOUT checkpoint each (an attempt, and the actor's failure)."""


class StatementFailed(InternalError):
    """An author's statement failed (its savepoint is rolled back). transient: the
    error was transient, but this was the wave's last try."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient
