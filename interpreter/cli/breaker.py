"""`interp breaker reset ACTOR`: close an actor's circuit breaker by hand."""

from __future__ import annotations

import click

from ..breaker import reset_breaker
from .context import Context


@click.group()
def breaker() -> None:
    """Circuit breakers: one per actor, shared by every worker (interp.actor_health).

    Example:

        interp breaker reset summarise
    """


@breaker.command("reset")
@click.argument("actor")
@click.pass_obj
def breaker_reset(ctx: Context, actor: str) -> None:
    """Close ACTOR's breaker now: its failure window is emptied and any probe dropped.

    Running workers see it at their next look at the breakers (within a second).
    Use it after fixing what made the actor fail, instead of waiting for the
    cool-down and a half-open probe.

    Example:

        interp breaker reset summarise
    """
    if reset_breaker(ctx.db, actor):
        click.echo(f"breaker of actor {actor} closed", err=True)
    else:
        click.echo(f"actor {actor} has no breaker row (it never failed): nothing to close",
                   err=True)
