"""`interp seed ...`: load workflow definitions and sample data."""

from __future__ import annotations

import click

from .context import Context


@click.group()
def seed() -> None:
    """Load workflow definitions and sample data.

    Example:

        interp seed load
    """


@seed.command("load")
@click.argument("paths", nargs=-1)
@click.pass_obj
def seed_load(ctx: Context, paths: tuple[str, ...]) -> None:
    """Run SQL seed files, each in its own transaction (a folder means its *.sql files).

    With no PATHS, load the seeds that ship with interp: the domain tables,
    the skills list, the worked example (workflow 1001) and workflow 3001.

    Example:

        interp seed load && interp seed load my_seeds/ extra.sql
    """
    from ..seeds import expand_paths, load_seed_file, packaged_seeds

    files = expand_paths(list(paths)) if paths else packaged_seeds()
    ctx.migrate_if_needed()
    for path in files:
        load_seed_file(ctx.db, path)
        click.echo(f"loaded {path}", err=True)


@seed.command("postings")
@click.option("--count", default=50, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option("--seed", "rng_seed", default=42, show_default=True, help="Random seed.")
@click.option("--start-id", default=1, show_default=True, type=click.IntRange(1))
@click.pass_obj
def seed_postings(ctx: Context, count: int, rng_seed: int, start_id: int) -> None:
    """Generate realistic, varied sample job postings (deterministic for a seed).

    Needs the postings table, which `interp seed load` creates.

    Example:

        interp seed postings --count 50 --seed 7
    """
    from actors.sample_postings import insert_postings

    n = insert_postings(ctx.db, count=count, seed=rng_seed, start_id=start_id)
    click.echo(f"wrote {n} postings", err=True)
